"""--check-outputs: does the benchmarked step compute what a float32 eager model of the same weights does?
Run after the timed steps (the first call stays the one timed as compile_seconds), on every rank's device, fed
the same input in its exact host form (docs/inputs-and-precision.md, "Output check")."""
import functools

from mpirunner.checks.check import Check

MIN_AGREEMENT = 0.9


def tie_tolerance(dtype):
    import torch

    return max(4 * torch.finfo(dtype).eps, 1e-4)


def compare_outputs(outputs, reference, dtype):
    """Error numbers of `outputs` against `reference` ([samples, classes]); dtype sets the tie tolerance."""
    import torch

    out = torch.as_tensor(outputs).detach().float().cpu().reshape(reference.shape[0], -1)
    ref = reference.detach().float().cpu().reshape(reference.shape[0], -1)
    finite = bool(torch.isfinite(out).all())
    difference = out - ref
    ref_norm = float(ref.norm())
    bench_top1 = out.argmax(dim=1)
    ref_best = ref.max(dim=1).values
    ref_scale = ref.abs().max(dim=1).values
    ref_at_bench_top1 = ref.gather(1, bench_top1.view(-1, 1)).squeeze(1)
    within_ties = ref_at_bench_top1 >= ref_best - tie_tolerance(dtype) * ref_scale
    return {
        "max_abs_error": float(difference.abs().max()) if finite else float("inf"),
        "rel_error": float(difference.norm()) / (ref_norm if ref_norm > 0 else 1.0) if finite else float("inf"),
        "top1_agreement": float((bench_top1 == ref.argmax(dim=1)).float().mean()),
        "top1_agreement_within_ties": float(within_ties.float().mean()) if finite else 0.0,
        "finite": finite,
    }


@functools.lru_cache(maxsize=1)
def _reference_model(config):
    from mpirunner.models.assembly import build_reference_model

    return build_reference_model(config)


def check_dtype(model):
    """The 16-bit type whose rounding the check must tolerate: the compute dtype, or the weights' one for 16.32."""
    import torch

    return model.weights_dtype if model.compute_dtype == torch.float32 else model.compute_dtype


def judge(gathered, samples, dtype):
    """Every rank's numbers -> the Check rank 0 keeps: the worst numbers, passed or failed with its reason."""
    worst = {key: max(row[key] for row in gathered) for key in ("max_abs_error", "rel_error")}
    worst.update({key: min(row[key] for row in gathered) for key in ("top1_agreement", "top1_agreement_within_ties")})
    finite = all(row["finite"] for row in gathered)
    passed = finite and worst["top1_agreement_within_ties"] >= MIN_AGREEMENT
    attrs = {f"output_check_{key}": value for key, value in worst.items()}
    attrs.update(output_check_passed=bool(passed), output_check_samples=int(samples),
                 output_check_min_agreement=MIN_AGREEMENT, output_check_tie_tolerance=tie_tolerance(dtype),
                 output_check_finite=finite)
    if passed:
        reason = ""
    elif finite:
        reason = (f"output check failed: top-1 agreement within ties "
                  f"{100 * worst['top1_agreement_within_ties']:.1f}% < {100 * MIN_AGREEMENT:.0f}%")
    else:
        reason = "output check failed: non-finite outputs"
    return Check("output_check", bool(passed), reason, attrs)


def output_numbers(config, backend, model, step, source):
    """This rank's compare_outputs of one step against the reference, and the number of samples."""
    import torch

    reference_input = source.check_input()
    bench_input = reference_input if reference_input.dtype == torch.uint8 else reference_input.to(model.input_dtype)
    outputs, _ = step(backend.to_device(bench_input))
    with torch.inference_mode():
        reference = _reference_model(config)(reference_input)
    return {**compare_outputs(outputs, reference, check_dtype(model)), "samples": int(reference.shape[0])}


def judge_ranks(gathered, model):
    return judge(gathered, gathered[0]["samples"], check_dtype(model))
