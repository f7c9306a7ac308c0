import pytest

from tfdefakeq.backbones import backbone_info, build, list_backbones
from tfdefakeq.errors import UserError
from tfdefakeq.tfcompat import keras


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
    assert model.layers[-1].activation.__name__ == "linear"  # a logit: the runtime applies sigmoid
    # flat Functional graph: no nested models, no Lambda / TFOpLambda layers (tfmot rejects them)
    for layer in model.layers:
        assert not isinstance(layer, keras.Model), layer.name
        assert type(layer).__name__ not in ("Lambda", "TFOpLambda", "Rescaling"), layer.name


@pytest.mark.parametrize("name", list_backbones())
def test_reference_parameter_count(name):
    info = backbone_info(name)
    model = build(name, input_shape=(224, 224, 3), num_classes=1000)
    if info.family == "resnet":
        # torchvision's published counts exclude BatchNorm running statistics: compare trainable params
        count = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    else:
        count = model.count_params()
    assert count == info.reference_params
