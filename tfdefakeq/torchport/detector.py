"""A PyTorch state dict -> our Keras float detector and its manifest (the engine behind
`python -m tfdefakeq.port`; reading the file is `checkpoint`, the key/shape mapping `mapping`)."""

from __future__ import annotations

from tfdefakeq.core.errors import UserError


def port_checkpoint(state: dict, backbone: str, input_size: int | None = None, fake_class: int | None = None,
                    path="checkpoint", mean_std=None, torch_image_size: int | None = None):
    """A state dict -> (Keras float detector, its Manifest) (the Python API of `python -m tfdefakeq.port`)."""

    from tfdefakeq.backbones import backbone_info
    from tfdefakeq.core.manifest import Manifest, command_line, versions
    from tfdefakeq.torchport.mapping import FAMILIES, guess_build_kwargs, normalize_keys, port_state_dict

    if input_size is None:
        import inspect

        default = inspect.signature(backbone_info(backbone).builder).parameters["input_shape"].default
        input_size = int(default[0])
    if input_size < 32:
        raise UserError(f"--input-size {input_size}: too small for a torch twin (32 px at least)")
    kwargs = guess_build_kwargs(backbone, normalize_keys(state, FAMILIES[backbone]), input_size)
    if mean_std is not None:
        kwargs["torch_normalize"] = [list(map(float, mean_std[0])), list(map(float, mean_std[1]))]
    if torch_image_size is not None:
        if not backbone.startswith("efficientnet"):
            raise UserError(f"--torch-image-size applies to EfficientNet only, not {backbone}")
        kwargs["torch_image_size"] = int(torch_image_size)
    try:
        model, kwargs = port_state_dict(state, backbone, input_size, fake_class, path=path, build_kwargs=kwargs)
    except ValueError as e:  # a graph that cannot be built at this size (e.g. a side shrinking to 0)
        raise UserError(f"{path}: {backbone} cannot run at {input_size} px ({str(e).splitlines()[0][:160]})") from e
    manifest = Manifest(backbone=backbone, input_shape=[input_size, input_size, 3], format="keras", scheme="float",
                        build_kwargs=kwargs, versions=versions(), command=command_line(),
                        source={"mapping": FAMILIES[backbone].reference, "fake_class": 1 if fake_class is None else fake_class})
    return model, manifest
