"""Full mode: every fusion family checked on the whole checkpoint, each load in a fresh process.

The steps, in order (each one's failure is a reason in the verdict):
1. discovery on the meta device + a plain reference load        -> `probe_reference`
2. fused load, weights arrive, original-format and fused saves  -> `probe_fused_load`
3. the default re-save against the source, tensor by tensor     -> `verify.compare_checkpoints`
4. downstream: config.json carries fusion_config, plain load    -> `probe_reload`
5. the fused layout reloads to the same weights                  -> `probe_reload`
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hubfuse.check import downstream as downstream_matrix
from hubfuse.check import worker
from hubfuse.check.cell_case import case_for
from hubfuse.check.modes import CheckRequest, FamilyOutcome, StopUnsafe, settle, timed
from hubfuse.check.probe_launch import ProbeLauncher
from hubfuse.check.proofs import full_mode_proofs
from hubfuse.check.reasons import (
    is_unclean,
    modules_not_fused_reason,
    not_applicable_reason,
    transforms_error_reason,
    unclean_plain_load_reason,
    unloaded_weights_reason,
)
from hubfuse.check.verdict import FamilyResult, LoadCheck, Roundtrip, output_tolerance
from hubfuse.checkpoint import Checkpoint, stage_validated_files
from hubfuse.checkpoint_compare import (
    compare_checkpoints,
    config_changes,
    files_byte_identical,
    index_checkpoint,
)
from hubfuse.configedit import set_top_level_key
from hubfuse.log import log
from hubfuse.machine import loads_that_fit
from hubfuse.transformers_info import modeling_modules


class FullMode:
    """The `CheckMode` that loads the whole checkpoint (`hubfuse.check.modes`)."""

    name = "full"

    def __init__(
        self, checkpoint: Checkpoint, request: CheckRequest, launcher: ProbeLauncher | None = None
    ) -> None:
        self.checkpoint = checkpoint
        self.request = request
        self.launcher = launcher  # the downstream probes' (its host may be starting already)
        self.where = str(checkpoint.path)
        self.model_type = checkpoint.model_type
        self.architecture = checkpoint.architecture
        self.preload = modeling_modules(checkpoint.model_type)

    def check_family(self, family: str, work: Path) -> FamilyOutcome:
        """`request.downstream` also runs the config-only load on other transformers releases, whatever
        the verdict here, and gates the family on it (hubfuse/check/downstream.py)."""
        checkpoint, request = self.checkpoint, self.request
        source = stage_validated_files(checkpoint, work / "source")
        check = FamilyCheck(checkpoint, source, family, work, request.timeout, request.list_tensors)
        result = check.run()
        result.proofs = full_mode_proofs(result, len(index_checkpoint(checkpoint.path)))
        if request.downstream is not None:
            apply_downstream_matrix(
                result, request.downstream, checkpoint, work, request.timeout, self.launcher
            )
        return FamilyOutcome(result, check.dtype)

    def keep_artifacts(self, work: Path, target: Path) -> None:
        """The family's verified fused-layout save: what a fused variant repo publishes."""
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(work / "fused"), target)

    def log_files(self, family: str, work: Path) -> dict[str, Path]:
        return {f"{family}-{log_file.name}": log_file for log_file in work.glob("*.log")}


def apply_downstream_matrix(
    result: FamilyResult,
    plan: downstream_matrix.DownstreamPlan,
    checkpoint: Checkpoint,
    work: Path,
    timeout: float,
    launcher: ProbeLauncher | None = None,
) -> None:
    fused = work / "fused"
    # The fused-layout save is a variant only where the installed release proved it.
    variant = fused if fused.is_dir() and result.verdict == "safe" else None
    inputs = downstream_matrix.MatrixInputs(checkpoint.path, work / "downstream", variant)
    weights = checkpoint.weight_bytes
    case = case_for(checkpoint, result.name, result.fused_modules, index_checkpoint(checkpoint.path))
    with log.group(f"downstream matrix for {result.name}"):
        jobs, loads = downstream_matrix.matrix_jobs(weights), downstream_matrix.matrix_loads(weights)
        downstream_matrix.apply_matrix(result, plan, inputs, work, timeout, jobs, case, loads, launcher)


class FamilyCheck:
    """Points 1-6 on one checkpoint folder (targeted mode runs it on the structural twin too)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        source: Path,
        family: str,
        work: Path,
        timeout: float,
        list_tensors: bool,
    ) -> None:
        self.checkpoint = checkpoint
        self.source = source  # the validated files only: every load reads from here
        self.family = family
        self.work = work
        self.timeout = timeout
        self.list_tensors = list_tensors
        self.result = FamilyResult(name=family, verdict="safe")
        self.dtype: str | None = None

    def run(self) -> FamilyResult:
        return settle(self.result, self._check)

    def _probe(self, stage: str, probe: str, *args: Any) -> dict[str, Any]:
        log.info(f"  {stage}")
        return timed(
            self.result,
            stage,
            lambda: worker.run_isolated(
                probe,
                *args,
                log_path=self.work / f"{stage}.log",
                timeout=self.timeout,
                mapped_bytes=self.checkpoint.weight_bytes,
            ),
        )

    def _fail(self, reason: str) -> None:
        self.result.reasons.append(reason)

    def _check(self) -> None:
        source = str(self.source)
        trust = self.checkpoint.trust_remote_code
        reference = self._probe("discover", "probe_reference", source, self.family, str(self.work), trust)
        if not reference["fusable"]:
            self.result.verdict = "not_applicable"
            self.result.reasons.append(not_applicable_reason(reference, self.family))
            return
        # What the config PR makes, staged before any fused load: the matrix runs on it whatever
        # the installed release makes of the fusion.
        downstream = self._downstream_copy()
        if reference["transforms_error"]:
            self._fail(transforms_error_reason(self.family, reference["transforms_error"]))
            raise StopUnsafe
        self.dtype = reference.get("dtype")
        plain = reference["plain_load"]
        if is_unclean(plain, mismatched=False):
            self._fail(unclean_plain_load_reason(plain))

        resave, fused = self.work / "resave", self.work / "fused"
        try:
            fused_load = self._probe(
                "fused_load",
                "probe_fused_load",
                source,
                self.family,
                str(self.work),
                trust,
                str(resave),
                str(fused),
            )
        except worker.WorkerFailure as failure:
            if not failure.raised:
                raise
            self._fail(f"the fused load raises {failure}")
            raise StopUnsafe from None

        self.result.fused_modules = fused_load["fused_modules"]
        self._judge_load("fused load", fused_load, reference["reference_modules"], LoadCheck())
        timed(self.result, "roundtrip", lambda: self._judge_roundtrip(resave))

        jobs = {"downstream": downstream, "fused_layout": fused}
        with ThreadPoolExecutor(max_workers=_concurrent_loads(self.checkpoint, len(jobs))) as pool:
            futures = {
                name: pool.submit(self._probe, name, "probe_reload", str(path), str(self.work), trust)
                for name, path in jobs.items()
            }
            for name, future in futures.items():
                label = (
                    "downstream load (fusion_config in config.json)"
                    if name == "downstream"
                    else "fused-layout reload"
                )
                target = self.result.downstream if name == "downstream" else self.result.fused_layout
                try:
                    outcome = future.result()
                except worker.WorkerFailure as failure:
                    if not failure.raised:
                        raise
                    self._fail(f"the {label} raises {failure}")
                    continue
                self._judge_load(label, outcome, reference["reference_modules"], target)

    def _judge_load(
        self, label: str, outcome: dict[str, Any], expected_modules: list[str], target: LoadCheck
    ) -> None:
        load = outcome["load"]
        fused_modules: dict[str, str] = outcome["fused_modules"]
        target.fused_modules = fused_modules
        if is_unclean(load):
            self._fail(unloaded_weights_reason(label, load))
        missing_modules = sorted(set(expected_modules) - set(fused_modules))
        if missing_modules:
            self._fail(modules_not_fused_reason(label, missing_modules))
        weight_problems = [f"{m}.{p}" for m, problems in outcome["weights"].items() for p in problems]
        target.weights_match = not weight_problems
        if weight_problems:
            self._fail(
                f"{label}: fused weights are not the converted source weights: {'; '.join(weight_problems[:3])}"
            )
        self._judge_outputs(label, outcome["outputs"], target)

    def _judge_outputs(self, label: str, outputs: dict[str, Any], target: LoadCheck) -> None:
        worst: float | None = None
        for module, measured in outputs.items():
            if isinstance(measured, str):
                self._fail(f"{label}: {module}: {measured}")
                continue
            tolerance = output_tolerance(self.dtype, measured["scale"])
            diff = measured["max_abs_diff"]
            worst = diff if worst is None else max(worst, diff)
            target.output_tolerance = (
                tolerance if target.output_tolerance is None else min(target.output_tolerance, tolerance)
            )
            if diff > tolerance:
                self._fail(
                    f"{label}: {module} output differs from the plain model by {diff:.3g} (tolerance {tolerance:.3g})"
                )
        target.max_abs_output_diff = worst

    def _judge_roundtrip(self, resave: Path) -> None:
        comparison = compare_checkpoints(self.source, resave)
        identity = files_byte_identical(self.source, resave)
        resaved_config = json.loads((resave / "config.json").read_text())
        roundtrip = Roundtrip(
            tensors_bit_exact=comparison.tensors_bit_exact,
            tensors_compared=comparison.tensors_compared,
            bytes_compared=comparison.bytes_compared,
            mismatches=[{"name": m.name, "kind": m.kind, "detail": m.detail} for m in comparison.mismatches],
            files_byte_identical=identity.identical,
            files=[{"name": f.name, "identical": f.identical, "detail": f.detail} for f in identity.files],
            config_changes=config_changes(self.checkpoint.config, resaved_config),
        )
        if self.list_tensors:
            bad = {m.name: m.kind for m in comparison.mismatches}
            roundtrip.tensors = [
                {
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "status": bad.get(t.name, "bit-exact"),
                }
                for t in sorted(index_checkpoint(self.source).values(), key=lambda t: t.name)
            ] + [{"name": name, "status": kind} for name, kind in sorted(bad.items()) if kind == "unexpected"]
        self.result.roundtrip = roundtrip
        if not comparison.tensors_bit_exact:
            kinds = ", ".join(f"{m.name} ({m.kind})" for m in comparison.mismatches[:3])
            more = len(comparison.mismatches) - 3
            self._fail(
                "the original-format re-save does not give back the source tensors: "
                + kinds
                + (f" and {more} more" if more > 0 else "")
            )

    def _downstream_copy(self) -> Path:
        """The checkpoint as a downstream user sees it after the config PR: links plus the edited config."""
        target = stage_validated_files(self.checkpoint, self.work / "downstream")
        (target / "config.json").unlink()
        edited = set_top_level_key(self.checkpoint.config_text, "fusion_config", {self.family: True})
        (target / "config.json").write_text(edited, encoding="utf-8")
        return target


def _concurrent_loads(checkpoint: Checkpoint, wanted: int) -> int:
    """Run the reloads side by side only when that many copies of the model fit in memory."""
    # A loaded model takes about 1.2x its checkpoint.
    return loads_that_fit(checkpoint.weight_bytes, 1.2, wanted)
