"""The downstream probe: runs INSIDE another transformers release's environment.

Self-contained on purpose (standard library, torch, transformers, safetensors): it must not import
hubfuse, whose code targets the installed transformers. What it needs of transformers' fusion
internals comes from the one adapter, `transformers_fusion.py` beside this file, loaded by its path
(it is standalone too). Started once per environment as
`python -I downstream_probe.py REQUEST.json RESULT.json`, or forked from the probe host
(`probe_host.py`, which has torch imported already); it imports torch and transformers once,
then forks a fresh child per scenario (transformers' fusion registry is process-global and sticky),
`scenario_jobs` of them at once, and judges the scenarios into one word per cell. A release that does not know the model's
architecture at all (no plain load either) runs no scenario: its cells are `unsupported`.

Scenarios, each in its own child:
  plain               the source checkpoint, no fusion_config: the reference of this release
  config              the config-only load: config.json carries fusion_config, no argument
  config_twice        the config-only load twice in one process (the second one is judged)
  plain_after_config  a config-only load, then a plain load of the source in the same process
  variant(_twice)     the fused-layout variant, once and twice in one process
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET = re.compile(r"(^|\.)patch_embed$")
ADAPTER = Path(__file__).resolve().parent / "transformers_fusion.py"


def _adapter() -> Any:
    """hubfuse's adapter to transformers' fusion internals, by path (hubfuse is not importable here)."""
    module = sys.modules.get("_hubfuse_transformers_fusion")
    if module is None:
        spec = importlib.util.spec_from_file_location("_hubfuse_transformers_fusion", ADAPTER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def _hash(tensor: Any) -> str:
    import torch

    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.blake2b(data.tobytes() if data.size < (1 << 20) else data.data, digest_size=16).hexdigest()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _load(path: str) -> tuple[Any, dict[str, list[str]]]:
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    cls = getattr(transformers, (config.architectures or ["AutoModel"])[0], None)
    if cls is None:
        raise RuntimeError(f"transformers {transformers.__version__} has no class {config.architectures[0]}")
    # Exactly what a downstream user runs: no dtype, no fusion argument.
    model, info = cls.from_pretrained(path, output_loading_info=True)
    model.eval()
    return model, {
        "missing": sorted(str(k) for k in info.get("missing_keys", ())),
        "unexpected": sorted(str(k) for k in info.get("unexpected_keys", ())),
    }


def _capture(model: Any, load_info: dict[str, list[str]], out_dir: Path, tag: str) -> dict[str, Any]:
    """What the judge needs: fused modules, target modules' weights and outputs, every tensor's hash."""
    import torch

    modules = dict(model.named_modules())
    fused = _adapter().fused_modules(model)
    targets: dict[str, Any] = {}
    with torch.no_grad():
        for name, module in modules.items():
            if not TARGET.search(name):
                continue
            entry: dict[str, Any] = {"params": {n: _hash(p) for n, p in module.named_parameters()}}
            proj, linear = getattr(module, "proj", None), getattr(module, "linear_proj", None)
            weight = linear.weight if linear is not None else getattr(proj, "weight", None)
            if weight is None:
                continue
            if linear is None and weight.dim() == 5:
                # The conversion a fused load must apply: Conv3d (out, in, t, h, w) -> Linear (out, in*t*h*w).
                entry["as_fused"] = {"linear_proj.weight": _hash(weight.reshape(weight.shape[0], -1))}
                if getattr(proj, "bias", None) is not None:
                    entry["as_fused"]["linear_proj.bias"] = _hash(proj.bias)
            in_dim = linear.in_features if linear is not None else weight[0].numel()
            generator = torch.Generator().manual_seed(0)
            sample = torch.randn(4, in_dim, generator=generator).to(weight.dtype)
            try:
                output_file = out_dir / f"{tag}-{name}.pt"
                torch.save(module(sample).detach().float().clone(), output_file)
                entry["output"] = str(output_file)
            except Exception as exc:
                entry["output_error"] = _describe(exc)
            entry["dtype"] = str(weight.dtype).removeprefix("torch.")
            targets[name] = entry
    tensors = {key: _hash(value) for key, value in model.state_dict().items()}
    return {"fused": fused, "targets": targets, "tensors": tensors, "load": load_info}


def _saved(model: Any, folder: Path) -> dict[str, Any]:
    """The default save_pretrained of this release: every tensor's hash, and config.json."""
    from safetensors import safe_open

    model.save_pretrained(str(folder))
    tensors: dict[str, str] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                tensors[key] = _hash(handle.get_tensor(key))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return {"tensors": tensors, "config": config}


def _release(model: Any) -> None:
    del model
    gc.collect()


def scenario(name: str, request: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One fresh process: the first load (captured, saved), then the repeat load if any."""
    source, downstream, variant = request["source"], request["downstream"], request.get("variant")
    first, then = {
        "plain": (source, None),
        "config": (downstream, downstream),
        "plain_after_config": (downstream, source),
        "variant": (variant, variant),
    }[name]
    model, info = _load(first)
    result: dict[str, Any] = {}
    with _probe_step("capture"):
        if name != "plain_after_config":
            result = _capture(model, info, out_dir, name)
    with _probe_step("save_pretrained"):
        if name in ("plain", "config"):  # the original-format re-save, what the config PR leads to
            result["saved"] = _saved(model, out_dir / f"{name}-save")
    _release(model)
    if then is not None:
        try:
            model, info = _load(then)
        except Exception as exc:
            result["then"] = {"raised": _describe(exc), "traceback": traceback.format_exc()[-4000:]}
        else:
            with _probe_step("capture"):
                result["then"] = {"value": _capture(model, info, out_dir, f"{name}-then")}
    return result


class ProbeError(Exception):
    """A failure after the load (capture or save): reported as `error`, never as a load outcome."""


@contextmanager
def _probe_step(step: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise ProbeError(f"{step} failed: {_describe(exc)}") from exc


def start_forked(name: str, request: dict[str, Any], out_dir: Path) -> tuple[int, Path]:
    """The scenario in a fresh child process, which writes its outcome to the returned file."""
    outcome_file = out_dir / f"{name}.outcome.json"
    outcome_file.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:
        signal.alarm(int(request.get("timeout_s", 1800)))
        try:
            payload = {"value": scenario(name, request, out_dir)}
        except BaseException as exc:
            payload = {"raised": _describe(exc), "traceback": traceback.format_exc()[-4000:]}
        partial = outcome_file.with_suffix(".partial")
        partial.write_text(json.dumps(payload), encoding="utf-8")
        partial.rename(outcome_file)
        os._exit(0)
    return pid, outcome_file


def forked_outcome(outcome_file: Path, status: int) -> dict[str, Any]:
    """{"value": ...}, {"raised": ...} or {"died": ...} of a reaped scenario child."""
    if outcome_file.is_file():
        outcome: dict[str, Any] = json.loads(outcome_file.read_text(encoding="utf-8"))
        return outcome
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        why = "timed out" if signum == signal.SIGALRM else f"killed by signal {signum}"
        return {"died": f"the process {why}"}
    return {"died": f"the process exited with {os.waitstatus_to_exitcode(status)} and no result"}


def run_scenarios(
    names: list[str], request: dict[str, Any], out_dir: Path
) -> tuple[dict[str, Any], dict[str, float]]:
    """Each scenario in its own fresh child, `scenario_jobs` at once; (outcomes, seconds) by name.

    The children are forked from this one thread (no other thread holds a lock at a fork).
    """
    jobs = max(1, int(request.get("scenario_jobs", 1)))
    waiting, running = list(names), {}
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    while waiting or running:
        while waiting and len(running) < jobs:
            name = waiting.pop(0)
            pid, outcome_file = start_forked(name, request, out_dir)
            running[pid] = (name, outcome_file, time.monotonic())
        pid, status = os.wait()
        if pid not in running:
            continue
        name, outcome_file, started = running.pop(pid)
        results[name] = forked_outcome(outcome_file, status)
        seconds[name] = round(time.monotonic() - started, 3)
    return {name: results[name] for name in names}, {name: seconds[name] for name in names}


# -- judging ------------------------------------------------------------------------------------


def _tolerance(request: dict[str, Any], dtype: str, scale: float) -> float:
    return float(request["tolerances"].get(dtype, 1e-2)) * max(1.0, scale)


def _output_problem(
    request: dict[str, Any], name: str, plain: dict[str, Any], loaded: dict[str, Any]
) -> str | None:
    import torch

    if "output" not in plain or "output" not in loaded:
        error = loaded.get("output_error") or plain.get("output_error")
        return f"{name}: forward failed ({error})" if error else None
    expected, actual = torch.load(plain["output"]), torch.load(loaded["output"])
    if expected.shape != actual.shape:
        return f"{name}: output shape {tuple(actual.shape)} != plain {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    tolerance = _tolerance(request, plain.get("dtype", "float32"), expected.abs().max().item())
    if diff > tolerance:
        return f"{name}: output differs from the plain load by {diff:.3g} (tolerance {tolerance:.3g})"
    return None


def judge_load(
    request: dict[str, Any], plain: dict[str, Any], loaded: dict[str, Any], label: str
) -> tuple[str, list[str]]:
    """('fused' | 'ignored', problems) for one load against this release's plain load."""
    problems: list[str] = []
    extra_missing = sorted(set(loaded["load"]["missing"]) - set(plain["load"]["missing"]))
    extra_unexpected = sorted(set(loaded["load"]["unexpected"]) - set(plain["load"]["unexpected"]))
    if not loaded["fused"]:
        differing = sorted(k for k, h in plain["tensors"].items() if loaded["tensors"].get(k) != h)
        if differing or extra_missing or extra_unexpected:
            problems.append(
                f"{label} is not fused and differs from the plain load: "
                + _listing("tensors not the source's", differing)
                + (_listing("; missing", extra_missing) if extra_missing else "")
                + (_listing("; unexpected", extra_unexpected) if extra_unexpected else "")
            )
        return "ignored", problems
    if extra_missing or extra_unexpected:
        problems.append(
            f"{label} left weights unloaded: {_listing('missing', extra_missing)}; "
            f"{_listing('unexpected', extra_unexpected)}"
        )
    for name, reference in plain["targets"].items():
        if "as_fused" not in reference:
            continue
        if name not in loaded["fused"]:
            problems.append(f"{label}: {name} is not fused")
            continue
        actual = loaded["targets"].get(name, {}).get("params", {})
        wrong = sorted(p for p, h in reference["as_fused"].items() if actual.get(p) != h)
        if wrong:
            problems.append(
                f"{label}: {name}.{', '.join(wrong)} is not the converted source weight "
                "(the fused patch embedding is not loaded from the checkpoint)"
            )
        problem = _output_problem(request, name, reference, loaded["targets"].get(name, {}))
        if problem:
            problems.append(f"{label}: {problem}")
    prefixes = tuple(f"{name}." for name in plain["targets"])
    others = sorted(
        k
        for k, h in plain["tensors"].items()
        if not k.startswith(prefixes) and "patch_embed." not in k and loaded["tensors"].get(k) != h
    )
    if others:
        problems.append(f"{label}: {_listing('other tensors differ from the plain load', others)}")
    return "fused", problems


def _listing(what: str, keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{what} {', '.join(keys[:limit]) or 'none'}{more}"


def _failed(result: dict[str, Any]) -> str | None:
    return result.get("raised") or result.get("died")


def judge_cell(request: dict[str, Any], results: dict[str, Any], subject: str) -> tuple[str, str, list[str]]:
    """(outcome, first reason, notes) for the config PR (subject 'config') or the variant."""
    plain = results["plain"]
    first = results[subject]
    for name, outcome in results.items():
        if str(outcome.get("raised", "")).startswith("ProbeError"):
            return "error", f"probe, {name}: {outcome['raised']}", []
    twice = first.get("value", {}).get("then", {})
    label = "config-only load" if subject == "config" else "variant load"
    if _failed(plain):  # the release knows the architecture (unknown_architecture): not the model's fault
        return "error", f"this release knows the model, yet its plain load fails ({_failed(plain)})", []
    if "died" in first:
        return "error", f"{label}: {first['died']}", []
    if "raised" in first:
        return "crash", f"{label} raises {first['raised']}", []
    kind, problems = judge_load(request, plain["value"], first["value"], label)
    if problems:
        return "unsafe", problems[0], []
    saved_plain, saved = plain["value"]["saved"], first["value"].get("saved")
    if subject == "config" and saved["tensors"] != saved_plain["tensors"]:
        differing = sorted(
            k
            for k in set(saved["tensors"]) | set(saved_plain["tensors"])
            if saved["tensors"].get(k) != saved_plain["tensors"].get(k)
        )
        return (
            "unsafe",
            f"the re-save differs from this release's plain save: {_listing('tensors', differing)}",
            [],
        )
    notes = []
    if saved is not None and "fusion_config" in saved["config"]:
        notes.append("the re-save keeps fusion_config")
    if "died" in twice:
        return "error", f"second {label} in one process: {twice['died']}", notes
    if "raised" in twice:
        return "crash", f"a second {label} in the same process raises {twice['raised']}", notes
    kind_twice, problems = judge_load(request, plain["value"], twice["value"], f"second {label}")
    if problems:
        return "unsafe", problems[0], notes
    if kind_twice != kind:
        return "unsafe", f"the second {label} in one process is {kind_twice}, the first {kind}", notes
    if subject == "config":
        after = results["plain_after_config"]
        after = after.get("value", {}).get("then", after)
        if "died" in after:
            return "error", f"plain load after a fused one: {after['died']}", notes
        if "raised" in after:
            return "crash", f"a plain load after a config-only load raises {after['raised']}", notes
        kind_after, problems = judge_load(
            request, plain["value"], after["value"], "plain load after a fused one"
        )
        if problems:
            return "unsafe", problems[0], notes
        if kind_after == "fused" and kind == "fused":
            notes.append("a plain load after a fused one is fused too (sticky registry), weights exact")
    if kind == "ignored":
        return "ignored", "fusion_config ignored: the model loads unfused, equal to the plain load", notes
    return "safe", "", notes


def unknown_architecture(source: str) -> str | None:
    """Why this release cannot load the model at all, not even plainly (None: it knows the model).

    Decided from what the release raises: AutoConfig refusing a model_type missing from its
    CONFIG_MAPPING, or no transformers class of the config's architecture. Any other failure is not
    this: the scenarios then run and report it (`error` when even the plain load fails). Also
    imports the model's modeling module once, before the scenarios fork.
    """
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        raw = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    architectures = raw.get("architectures") if isinstance(raw, dict) else None
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    if not isinstance(model_type, str):
        return None
    unknown = f"transformers {transformers.__version__} does not know {model_type}/{architecture or '-'}"
    try:
        transformers.AutoConfig.from_pretrained(source)
    except (KeyError, ValueError) as exc:
        if model_type not in CONFIG_MAPPING:
            return f"{unknown} (AutoConfig: {_describe(exc)})"
        return None
    except Exception:
        return None
    if isinstance(architecture, str) and getattr(transformers, architecture, None) is None:
        return f"{unknown} (no class {architecture})"
    return None


def shared_modules(shared: str) -> list[str]:
    """The shared torch's modules (torch and its own requirements) this process holds, in import order.

    Taken once `transformers.modeling_utils` is imported, before any model: what every probe of this
    environment imports whatever the model. The probe host (`probe_host.py`) imports no more than
    the records of the environments it serves have in common.
    """
    if not shared:
        return []
    prefix = os.path.join(os.path.abspath(shared), "")
    return [
        name
        for name, module in list(sys.modules.items())
        if os.path.abspath(getattr(module, "__file__", None) or "/").startswith(prefix)
    ]


def probe(request_path: Path, result_path: Path, started: str = "a fresh interpreter") -> None:
    """The whole probe of one environment: scenarios, judged cells, one result document."""
    probe_start = time.monotonic()
    request = json.loads(request_path.read_text(encoding="utf-8"))
    out_dir = Path(request["work_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers
    import transformers.modeling_utils

    shared = shared_modules(request.get("shared_torch", ""))
    torch.set_num_threads(max(1, int(request.get("threads", 1))))
    # Once, before the scenarios fork; the same dir() results in linear time, where exact.
    lazy_dir = _adapter().use_linear_lazy_module_dir()
    names = ["plain", "config", "plain_after_config"] + (["variant"] if request.get("variant") else [])
    subjects = ("config", "variant") if request.get("variant") else ("config",)
    unknown = unknown_architecture(request["source"])
    scenarios_start = time.monotonic()
    results, seconds = run_scenarios(names if unknown is None else [], request, out_dir)
    cells = {}
    for subject in subjects:
        if unknown is not None:
            cells[subject] = {"outcome": "unsupported", "reason": unknown, "notes": []}
            continue
        outcome, reason, notes = judge_cell(request, results, subject)
        cells[subject] = {"outcome": outcome, "reason": reason, "notes": notes}
    tracebacks = {n: r["traceback"] for n, r in results.items() if "traceback" in r}
    print(
        f"probe of transformers {transformers.__version__}, started from {started}: imports"
        f" {scenarios_start - probe_start:.1f} s, then "
        + (", ".join(f"{n} {t:.1f} s" for n, t in seconds.items()) or "no scenario")
        + f" ({len(names) if unknown is None else 0} scenarios, {request.get('scenario_jobs', 1)} at a time;"
        f" _LazyModule.__dir__: {lazy_dir})",
        flush=True,
    )
    result_path.write_text(
        json.dumps(
            {
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "cells": cells,
                "failures": {n: _failed(r) for n, r in results.items() if _failed(r)},
                "tracebacks": tracebacks,
                "seconds": seconds,
                "started": started,
                "shared_modules": shared,
                "lazy_module_dir": lazy_dir,
            }
        ),
        encoding="utf-8",
    )


def main() -> None:
    probe(Path(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()
    # The result is written and closed: skip the interpreter's teardown of torch and transformers
    # (1-2 s a probe, a fifth of a warm probe's time), which decides nothing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
