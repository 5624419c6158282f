"""Build a classification model by name (our aliases or any torchvision classification model), in eval mode."""
import difflib

from mpirunner.errors import UsageError

ALIASES = {
    "resnext101": "resnext101_32x8d",
    **{f"efficientnet-b{i}": f"efficientnet_b{i}" for i in range(8)},
}

# Native resolution of each model family (EfficientNet: the paper's compound-scaled sizes).
MODEL_RESOLUTIONS = {
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260, "efficientnet_b3": 300,
    "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600,
    "efficientnet_v2_s": 384, "efficientnet_v2_m": 480, "efficientnet_v2_l": 480,
    "inception_v3": 299, "vit_h_14": 518,
}


def torchvision_name(name):
    return ALIASES.get(name, name)


def model_names():
    import torchvision

    return sorted(ALIASES) + sorted(torchvision.models.list_models(module=torchvision.models))


def default_resolution(name):
    return MODEL_RESOLUTIONS.get(torchvision_name(name), 224)


def check_model_name(name):
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown model '{name}'{hint} (valid: resnet50, resnext101, efficientnet-b0..b7, "
                         f"or any torchvision classification model)")


def build_model(name, num_classes=1000):
    """A freshly initialised model in eval mode. Seed torch before calling for identical replicas."""
    import torchvision

    check_model_name(name)
    kwargs = {"weights": None, "num_classes": num_classes}
    if torchvision_name(name) == "inception_v3":
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(torchvision_name(name), **kwargs).eval()
