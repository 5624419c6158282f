"""The accuracy lines of a run (runner's block and mpirunner-report): the numbers and what explains them."""
from mpirunner.report.rows import text_value


def accuracy_lines(attrs):
    """Accuracy on labelled real data, with what explains it: images and classes loaded, how the class
    folders map to the model's class indices, why more samples than images were counted, and what the
    weights make of it. [] for runs without accuracy (and files written before these fields)."""
    if "accuracy_top1" not in attrs:
        return []
    samples = int(attrs["accuracy_samples"])
    # The reference harness parses the first `accuracy: *(.*?)%`: that line carries top-1 alone, and the
    # top-5 line below does not contain "accuracy:" at all.
    lines = [f"accuracy: {100 * attrs['accuracy_top1']:.2f}% (top-1 over {samples} samples of all ranks)",
             f"  top-5: {100 * attrs['accuracy_top5']:.2f}%"]
    if "accuracy_images" not in attrs:
        return lines
    images, classes = int(attrs["accuracy_images"]), int(attrs["accuracy_classes"])
    counted = (f"the steps cycle through the images, so each was counted about {samples / images:.1f} times"
               if images and samples > images else "each image counted at most once")
    lines.append(f"  {images} images in {classes} class folder(s) loaded; {counted}")
    mapping = text_value(attrs.get("accuracy_class_map", "")).split("; ")
    shown = ", ".join(mapping[:6]) + (f", ... ({len(mapping)} in all)" if len(mapping) > 6 else "")
    lines.append(f"  class folders, sorted by name, are the model's class indices: {shown}")
    weights = text_value(attrs.get("accuracy_weights", "random"))
    model_classes = int(attrs.get("accuracy_model_classes", 0))
    if weights == "random":
        chance = f": top-1 about {100 / model_classes:.2f}% over {model_classes} outputs" if model_classes else ""
        lines.append(f"  weights are random (seeded), so accuracy is at chance level{chance}; "
                     f"--weights torchvision or --weights FILE loads trained ones")
    else:
        lines.append(f"  weights: {weights}; folder i is scored against the model's output class i, so the "
                     f"folders must follow the training set's class order")
    return lines
