import pytest

from tfdefakeq.backbones import backbone_info, build, list_backbones
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.tfcompat import keras


def test_list_backbones_has_foundation_models():
    names = list_backbones()
    assert {"resnet18", "mobilenet_v2"} <= set(names)
    assert names == sorted(names)


def test_unknown_name_suggests_close_match():
    with pytest.raises(UserError, match=r"unknown backbone 'resnet81'.*did you mean resnet18"):
        build("resnet81")


def test_bad_input_shape_is_a_user_error():
    with pytest.raises(UserError, match="input_shape"):
        build("resnet18", input_shape=(64, 64, 1))


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_is_a_flat_detector(name):
    model = build(name, input_shape=(32, 32, 3))
    assert model.output_shape == (None, 1)
    # a logit: the runtime applies sigmoid (MobileNetV3 ends in keras.applications' Flatten after a 1x1 conv)
    last = model.layers[-1] if hasattr(model.layers[-1], "activation") else model.layers[-2]
    assert last.activation.__name__ == "linear"
    # flat Functional graph: no nested models, no Lambda / TFOpLambda layers (tfmot rejects them)
    for layer in model.layers:
        assert not isinstance(layer, keras.Model), layer.name
        assert type(layer).__name__ not in ("Lambda", "TFOpLambda", "Rescaling"), layer.name


def test_list_backbones_has_the_zoo():
    assert len(list_backbones()) >= 12
    assert {"resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "xception", "efficientnet_b0", "efficientnet_b4",
            "meso4", "mesoinception4", "cqb_resnet18"} <= set(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_reference_parameter_count(name):
    """Exactly the reference's count, counted as the reference counts it (registry metadata):
    torchvision and MesoNet publish trainable parameters (no BatchNorm statistics), keras.applications
    count_params(); at the reference's input size and classes."""
    info = backbone_info(name)
    assert info.reference_params, f"{name} has no reference parameter count"
    assert info.reference_counts in ("all", "trainable")
    side = info.reference_input
    model = build(name, input_shape=(side, side, 3), num_classes=info.reference_classes)
    if info.reference_counts == "trainable":
        count = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    else:
        count = model.count_params()
    assert count + info.params_outside_graph == info.reference_params
