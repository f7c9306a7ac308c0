from tfdefakeq.backbones import build


def test_resnet18_width_scales_channels():
    full = build("resnet18", input_shape=(64, 64, 3))
    half = build("resnet18", input_shape=(64, 64, 3), width=0.5)
    assert full.get_layer("conv5_block2_2_conv").filters == 512
    assert half.get_layer("conv5_block2_2_conv").filters == 256
    assert 3.5 < full.count_params() / half.count_params() < 4.5  # params scale ~ width^2


def test_resnet_downsamples_32x():
    model = build("resnet34", input_shape=(64, 64, 3))
    assert model.get_layer("conv5_block3_out").output_shape == (None, 2, 2, 512)
