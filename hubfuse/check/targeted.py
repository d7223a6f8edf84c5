"""Targeted mode: the six safety points, each proven on what can be reached without the model.

For a repo too large for this machine, hubfuse reads the safetensors headers (ranged reads) and
only the bytes of the tensors the family touches, then proves:

1. discovery on the meta device, from the real config (as full mode);
2. the fused load report of the *whole* model: transformers' own `from_pretrained` on the real
   key set (names, dtypes, shapes), with a meta tensor wherever it would copy bytes;
3. weights arrive, 4. re-save, 5. downstream, 6. fused layout: full mode's own checks, run on a
   structural twin: the real config with its stacks pruned (`hubfuse.check.twin`), saved by
   transformers under the real key names, holding the real bytes of every touched tensor.
   Point 4 also runs on the whole key set: the fused model's original-format save writes every
   key with the name, dtype and shape the plain model's save writes.

What it does not prove: bytes of the tensors fusion does not touch are never read, and the
whole model's outputs are never computed (nor are they in full mode: outputs are per module).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hubfuse.check import worker
from hubfuse.check.families import family_names
from hubfuse.check.full import FamilyCheck, apply_downstream_matrix
from hubfuse.check.modes import CheckRequest, FamilyOutcome, settle, timed
from hubfuse.check.probe_launch import ProbeLauncher
from hubfuse.check.proofs import POINTS, point_of, proof
from hubfuse.check.reasons import (
    is_unclean,
    key_list,
    modules_not_fused_reason,
    not_applicable_reason,
    transforms_error_reason,
    unclean_plain_load_reason,
    unloaded_weights_reason,
)
from hubfuse.check.verdict import FamilyResult
from hubfuse.checkpoint import open_checkpoint, read_checked_config, stage_validated_files
from hubfuse.log import log
from hubfuse.source import RepoSource
from hubfuse.transformers_info import modeling_modules

TARGETED_PROBES = "hubfuse.check.targeted_probes"


class TargetedMode:
    """The `CheckMode` that reads headers and touched tensors only (`hubfuse.check.modes`)."""

    name = "targeted"

    def __init__(
        self, source: RepoSource, request: CheckRequest, work: Path, launcher: ProbeLauncher | None = None
    ) -> None:
        self.source = source
        self.request = request
        self.launcher = launcher  # the downstream probes' (its host may be starting already)
        self.config_dir = work / "config"
        self.config_dir.mkdir()
        (self.config_dir / "config.json").write_text(source.config_text(), encoding="utf-8")
        checked = read_checked_config(
            self.config_dir, trust_remote_code=request.trust_remote_code, registered_families=family_names
        )
        # Every refusal the listing, the index and the headers decide (weight layout, budgets, a
        # config claiming far more layers than stored) comes before any process starts: a
        # refusal costs no forkserver start, and no worker ever builds a model the headers belie.
        tensors = source.tensors()
        self.where = f"{source.label} (targeted)"
        self.model_type = checked.model_type
        self.architecture = checked.architecture
        self.preload = [TARGETED_PROBES, *modeling_modules(checked.model_type)]
        self.keys = {name: [loc.dtype, list(loc.shape)] for name, (_, loc) in tensors.items()}
        self.keys_path = work / "keys.json"
        self.keys_path.write_text(json.dumps(self.keys))

    def check_family(self, family: str, work: Path) -> FamilyOutcome:
        check = _TargetedCheck(self, family, work)
        return FamilyOutcome(check.run(), check.dtype)

    def keep_artifacts(self, work: Path, target: Path) -> None:
        """What a shard-by-shard variant needs: the twin's verified fused-layout save and
        `variant.json` (`hubfuse.publish.variant_shards`)."""
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copytree(work / "twin-check" / "fused", target / "twin-fused")
        shutil.copyfile(work / VARIANT_FILE, target / VARIANT_FILE)

    def log_files(self, family: str, work: Path) -> dict[str, Path]:
        return {f"{family}-targeted-{log_file.name}": log_file for log_file in work.rglob("*.log")}


VARIANT_FILE = "variant.json"


class _TargetedCheck:
    def __init__(self, mode: TargetedMode, family: str, work: Path) -> None:
        self.source = mode.source
        self.family = family
        self.config_dir = mode.config_dir
        self.keys_path = mode.keys_path
        self.keys = mode.keys
        self.work = work
        self.trust_remote_code = mode.request.trust_remote_code
        self.timeout = mode.request.timeout
        # The downstream matrix runs on the twin: the real config and key names, the real bytes
        # of what the family touches (everything a release's config-only load can get wrong).
        self.downstream = mode.request.downstream
        self.launcher = mode.launcher
        self.result = FamilyResult(name=family, verdict="safe")
        self.proofs: dict[str, dict[str, Any]] = {}
        self.dtype: str | None = None
        self._save_names: tuple[bool, int] = (True, 0)

    def run(self) -> FamilyResult:
        settle(self.result, self._check)
        self.result.proofs = [
            self.proofs.get(point) or proof(point, None, self._unreached_how(), "-") for point in POINTS
        ]
        return self.result

    def _unreached_how(self) -> str:
        if self.result.verdict == "not_applicable":
            return "not applicable: nothing to fuse"
        return "not reached: an earlier point failed"

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
                module=TARGETED_PROBES,
            ),
        )

    def _fail(self, point: str, reason: str, how: str, tensors: str) -> None:
        self.result.reasons.append(reason)
        self.proofs[point] = proof(point, False, f"{how}: {reason}", tensors)

    def _check(self) -> None:
        whole = f"all {len(self.keys)} keys (names, dtypes, shapes; no bytes)"
        key_set = self._probe(
            "key_set",
            "probe_key_set",
            str(self.config_dir),
            self.family,
            str(self.keys_path),
            self.trust_remote_code,
        )
        how_discovery = "model class built on the meta device from the real config.json"
        if not key_set["fusable"]:
            self.result.verdict = "not_applicable"
            self.result.reasons.append(not_applicable_reason(key_set, self.family))
            self.proofs["discovery"] = proof("discovery", True, how_discovery + ": nothing to fuse", "-")
            return
        self.proofs["discovery"] = proof(
            "discovery", True, how_discovery, ", ".join(sorted(key_set["fusable"]))
        )

        how_load = "transformers' from_pretrained on the real key set, meta tensors instead of bytes"
        if key_set["transforms_error"]:
            self._fail(
                "fused_load",
                transforms_error_reason(self.family, key_set["transforms_error"]),
                how_load,
                whole,
            )
            return
        plain, fused = key_set["plain_load"], key_set["fused_load"]
        problems = []
        if is_unclean(plain):
            problems.append(unclean_plain_load_reason(plain))
        if is_unclean(fused):
            problems.append(unloaded_weights_reason("fused load", fused))
        self.result.fused_modules = key_set["fused_modules"]
        not_fused = sorted(set(key_set["fusable"]) - set(key_set["fused_modules"]))
        if not_fused:
            problems.append(modules_not_fused_reason("fused load", not_fused))
        if problems:
            for reason in problems:
                self._fail("fused_load", reason, how_load, whole)
            return
        self.proofs["fused_load"] = proof("fused_load", True, how_load + ": clean load report", whole)

        touched = sorted({k for names in key_set["touched"].values() for k in names})
        if not key_set["touched_confirmed"]:
            self.result.verdict = "error"
            self.result.reasons.append(
                "targeted mode cannot tell which checkpoint keys feed the fused modules "
                f"(unconfirmed: {key_list(key_set['touched_unconfirmed'] or touched)}); run --mode full"
            )
            return
        self._judge_save_names(key_set, touched, whole)
        variant = _variant_layout(key_set["fused_layout_save"], self.keys, touched)
        (self.work / VARIANT_FILE).write_text(json.dumps(variant, indent=1))

        twin = self._build_twin(touched)
        if twin is None:
            return
        self._check_twin(twin, touched)

    def _judge_save_names(self, key_set: dict[str, Any], touched: list[str], whole: str) -> None:
        """Point 4 on the whole model: fused and plain original-format saves write the same keys."""
        plain_save, fused_save = key_set["plain_save"], key_set["fused_save"]
        differences = [
            f"{name}: {plain_save.get(name)} -> {fused_save.get(name)}"
            for name in sorted(set(plain_save) | set(fused_save))
            if plain_save.get(name) != fused_save.get(name)
        ]
        if differences:
            self.result.reasons.append(
                "the original-format re-save renames, drops or reshapes keys: "
                + "; ".join(differences[:3])
                + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
            )
        self._save_names = (not differences, len(plain_save))

    def _build_twin(self, touched: list[str]) -> Path | None:
        how_twin = "structural twin"
        tensors = self.source.tensors()
        self.dtype = _torch_dtype(_majority_dtype(self.keys))
        payload = {name: (tensors[name][1], self.source.tensor_bytes(name)) for name in touched}
        touched_path = self.work / "touched.safetensors"
        _write_safetensors(touched_path, payload)
        twin = self.work / "twin"
        try:
            built = self._probe(
                "build_twin",
                "probe_build_twin",
                str(self.config_dir),
                str(touched_path),
                str(twin),
                _majority_dtype(self.keys),
                self.trust_remote_code,
            )
        except worker.WorkerFailure as failure:
            if not failure.raised:
                raise
            self.result.verdict = "error"
            self.result.reasons.append(
                f"targeted mode cannot build the structural twin: {failure}; run --mode full"
            )
            return None
        if built["missing"]:
            self.result.verdict = "error"
            self.result.reasons.append(
                f"{how_twin}: transformers saves the touched tensors under other names than the repo "
                f"({key_list(built['missing'])}); run --mode full"
            )
            return None
        return twin

    def _check_twin(self, twin: Path, touched: list[str]) -> None:
        """Full mode's own checks (points 3-6) on the twin."""
        checkpoint = open_checkpoint(
            twin, trust_remote_code=self.trust_remote_code, registered_families=family_names
        )
        twin_work = self.work / "twin-check"
        twin_work.mkdir()
        staged = stage_validated_files(checkpoint, twin_work / "source")
        twin_result = FamilyCheck(checkpoint, staged, self.family, twin_work, self.timeout, False).run()
        result = self.result
        result.reasons.extend(twin_result.reasons)
        if twin_result.verdict in ("error", "not_applicable") and result.verdict == "safe":
            result.verdict = twin_result.verdict if twin_result.verdict == "error" else "error"
            if twin_result.verdict == "not_applicable":
                result.reasons.append("the structural twin has nothing to fuse, unlike the real model")
        result.roundtrip = twin_result.roundtrip
        result.downstream = twin_result.downstream
        result.fused_layout = twin_result.fused_layout
        result.timings.update({f"twin_{k}": v for k, v in twin_result.timings.items()})
        if self.downstream is not None:
            apply_downstream_matrix(
                result, self.downstream, checkpoint, twin_work, self.timeout, self.launcher
            )
        twin_keys = checkpoint_key_count(twin)
        on_twin = f"{', '.join(touched)} (real bytes) in a {twin_keys}-tensor twin"
        failed = {point_of(reason) for reason in twin_result.reasons}
        reached = twin_result.timings
        hows = {
            "weights_arrive": "transformers' transforms on the real touched bytes; fused weights and outputs compared",
            "resave": "twin re-saved by the fused model, compared tensor by tensor (bytes)",
            "downstream": "config-only from_pretrained of the twin (real config pruned, real key names)",
            "fused_layout": "twin's fused-layout save reloaded; weights compared",
        }
        stages = {"weights_arrive": "fused_load", "resave": "roundtrip", "downstream": "downstream"}
        stages["fused_layout"] = "fused_layout"
        for point, how in hows.items():
            ran = stages[point] in reached and twin_result.verdict != "error"
            holds = (point not in failed) if ran else None
            self.proofs[point] = proof(point, holds, how, on_twin)
        names_hold, saved = self._save_names
        resave = self.proofs["resave"]
        resave["how"] += (
            f"; whole model: {saved} keys of the original-format save (meta) keep name, dtype, shape"
        )
        if not names_hold:
            resave["holds"] = False


def _variant_layout(
    layout: dict[str, list[Any]], keys: dict[str, list[Any]], touched: list[str]
) -> dict[str, Any]:
    """How the fused layout differs from the repo: only the touched tensors, or more (then a variant
    cannot be made by rewriting the touched shards alone)."""
    dropped = sorted(k for k in keys if k not in layout)
    changed = sorted(k for k in layout if k in keys and layout[k] != keys[k])
    return {
        "touched": touched,
        "fused": {k: layout[k] for k in sorted(layout) if k not in keys},
        "streamable": set(dropped) == set(touched) and not changed,
        "other_changes": sorted(set(dropped) - set(touched)) + changed,
    }


def checkpoint_key_count(folder: Path) -> int:
    from hubfuse.checkpoint_compare import index_checkpoint

    return len(index_checkpoint(folder))


def _majority_dtype(keys: dict[str, list[Any]]) -> str:
    counts: dict[str, int] = {}
    for dtype, _ in keys.values():
        counts[dtype] = counts.get(dtype, 0) + 1
    floating = {d: c for d, c in counts.items() if d.startswith(("F", "BF"))} or counts
    return max(floating, key=lambda d: floating[d])


def _torch_dtype(safetensors_dtype: str) -> str:
    return {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}.get(
        safetensors_dtype, safetensors_dtype.lower()
    )


def _write_safetensors(path: Path, tensors: dict[str, tuple[Any, bytes]]) -> None:
    """A safetensors file from raw tensor bytes (no torch in this process)."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (location, data) in tensors.items():
        header[name] = {
            "dtype": location.dtype,
            "shape": list(location.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _, data in tensors.values():
            f.write(data)
