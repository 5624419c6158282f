"""--weights: a saved state_dict, or torchvision's standard weights from the local cache, loaded strictly."""
import os
from pathlib import Path

from mpirunner.errors import UsageError
from mpirunner.models.registry import torchvision_name

SHOWN_KEYS = 5
TORCHVISION = "torchvision"  # --weights torchvision: the model's standard weights from torchvision's local cache


def _first(keys):
    keys = sorted(keys)
    more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def read_state_dict(path):
    """A state_dict from `torch.save(model.state_dict(), path)`; also accepted: {'state_dict': ...} checkpoints
    and keys prefixed 'module.' by DataParallel/DDP (the prefix is dropped when every key has it)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle that is not a plain state_dict, or not a torch file at all
        raise UsageError(f"--weights {path} is not a loadable state_dict file: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and set(state) == {"state_dict"} and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise UsageError(f"--weights {path} does not hold a state_dict (a mapping of parameter names to tensors)")
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def cached_torchvision_weights(model_name):
    """The cached file of torchvision's standard (DEFAULT) weights for the model; never downloads (benchmark hosts
    are often offline, and a download inside a timed job would be a surprise). UsageError says where to put it."""
    import torch
    import torchvision

    try:
        url = torchvision.models.get_model_weights(torchvision_name(model_name)).DEFAULT.url
    except (ValueError, KeyError, AttributeError):
        raise UsageError(f"--weights torchvision: torchvision has no standard weights for model {model_name}") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise UsageError(f"--weights torchvision: {path} is not in the local cache (nothing is downloaded); "
                         f"fetch {url} on a machine with network and copy it there (the cache is "
                         f"$TORCH_HOME/hub/checkpoints), or give --weights FILE")
    return path


def load_weights(network, path, model_name):
    """Load `path` (or `torchvision`: the cached standard weights) into `network`; UsageError names mismatches."""
    if path == TORCHVISION:
        path = cached_torchvision_weights(model_name)
    state = read_state_dict(path)
    expected = network.state_dict()
    differences = {"missing": set(expected) - set(state), "unexpected": set(state) - set(expected)}
    problems = [f"{kind} keys: {_first(keys)}" for kind, keys in differences.items() if keys]
    shapes = [key for key in sorted(set(expected) & set(state))
              if tuple(getattr(state[key], "shape", ())) != tuple(expected[key].shape)]
    if shapes:
        key = shapes[0]
        problems.append(f"shape of {key} is {tuple(state[key].shape)} in the file, {tuple(expected[key].shape)} "
                        f"in the model" + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if problems:
        raise UsageError(f"--weights {path} does not match model {model_name}: " + "; ".join(problems))
    network.load_state_dict(state, strict=True)
