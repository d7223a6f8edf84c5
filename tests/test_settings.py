"""Each user setting declared once (hubfuse/settings.py): its flag, its environment variable and
its spec key work, through `python -m hubfuse ...` as a user runs it; nothing else reads the
environment."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_env import assert_one_line_error, hubfuse_env, run_hubfuse

from hubfuse import settings
from hubfuse.localhub import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent
EMPTY_SELECTION = "repos: {author: nobody-here}\n"
RELEASES = ["5.24.0", "5.5.4"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.token = server.add_token("bot", role="write")
        yield server


def envs_with_releases(tmp_path: Path) -> Path:
    """An environments folder whose cached release list is fresh: no package index asked."""
    folder = tmp_path / "envs"
    folder.mkdir(mode=0o700)
    (folder / "releases.json").write_text(json.dumps({"fetched_at": time.time(), "versions": RELEASES}))
    return folder


def run_spec(hub, tmp_path: Path, spec: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.yml"
    path.write_text(spec)
    environ = hubfuse_env(
        hub.endpoint, tmp_path, hub.token, HUBFUSE_ENVS=str(envs_with_releases(tmp_path)), **env
    )
    environ.pop("HUBFUSE_DOWNSTREAM_VERSIONS", None)  # the product default: not the test suite's "none"
    return run_hubfuse(
        "run", str(path), "--json", "--ledger-dir", str(tmp_path / "ledgers"), *args, env=environ
    )


# -- the spec's setting keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [("'>>5'", "downstream_versions '>>5': '>>5' is not a PEP 440 specifier"), ("'5.x'", "'==5.x'")],
)
def test_validate_refuses_a_bad_downstream_spec_at_its_line(tmp_path, value, needle):
    spec = tmp_path / "spec.yml"
    spec.write_text(
        f"repos: {{ids: [org/model]}}\nfamilies: [patch_embeddings]\ndownstream_versions: {value}\n"
    )
    assert_one_line_error(run_hubfuse("validate", str(spec)), 2, f"{spec}:3:", needle)


def test_validate_accepts_downstream_specs_and_modes_without_asking_the_index(tmp_path):
    paths = []
    for index, (versions, mode) in enumerate(
        [("none", "auto"), (">=5.21 || ==5.5.4", "targeted"), ("NONE", "full")]
    ):
        paths.append(tmp_path / f"spec{index}.yml")
        paths[-1].write_text(
            f"repos: {{ids: [org/model]}}\ndownstream_versions: '{versions}'\nmode: {mode}\n"
        )
    environ = hubfuse_env("http://127.0.0.1:9", tmp_path, None, HUBFUSE_ENVS=str(tmp_path / "no-envs"))
    result = run_hubfuse("validate", *map(str, paths), env=environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}: ok" for path in paths]
    assert not (tmp_path / "no-envs").exists()  # the releases were never listed


def test_mode_is_a_spec_key_with_the_settings_choices(tmp_path):
    spec = tmp_path / "spec.yml"
    spec.write_text("repos: {ids: [org/model]}\nmode: fast\n")
    assert_one_line_error(run_hubfuse("validate", str(spec)), 2, f"{spec}:2:", "mode: 'fast' is not one of")
    assert settings.MODES == ("auto", "full", "targeted")


# -- run --downstream-versions and the spec's key ------------------------------------------------------


def test_run_resolves_the_spec_key_and_the_flag_wins(hub, tmp_path):
    spec = EMPTY_SELECTION + "downstream_versions: '==0.0.1'\n"
    from_spec = run_spec(hub, tmp_path / "a", spec)
    assert_one_line_error(
        from_spec, 2, "spec.yml: downstream_versions '==0.0.1' matches no transformers release"
    )
    for flag in ("none", "==5.24.0"):
        result = run_spec(hub, tmp_path / flag, spec, "--downstream-versions", flag)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["repos"] == []
    bad_flag = run_spec(hub, tmp_path / "b", EMPTY_SELECTION, "--downstream-versions", ">>5")
    assert_one_line_error(bad_flag, 2, "--downstream-versions '>>5'")


def test_run_refuses_a_bad_mode_from_the_spec_before_any_hub_call(hub, tmp_path):
    before = len(hub.requests())
    result = run_spec(hub, tmp_path, EMPTY_SELECTION + "mode: huge\n", "--mode", "full")
    assert_one_line_error(result, 2, "mode: 'huge' is not one of")
    assert len(hub.requests()) == before


# -- every flag, every environment variable -------------------------------------------------------------

COMMAND_FLAGS = {
    "check": [
        settings.FAMILIES,
        settings.MODE,
        settings.TIMEOUT,
        settings.DOWNSTREAM_VERSIONS,
        settings.TRUST_REMOTE_CODE,
        settings.JSON,
    ],
    "verify": [
        settings.FAMILIES,
        settings.MODE,
        settings.TIMEOUT,
        settings.DOWNSTREAM_VERSIONS,
        settings.JSON,
    ],
    "publish": [
        settings.FAMILIES,
        settings.MODE,
        settings.TIMEOUT,
        settings.DOWNSTREAM_VERSIONS,
        settings.TRUST_REMOTE_CODE,
        settings.DRY_RUN,
        settings.JSON,
    ],
    "run": [settings.MODE, settings.TIMEOUT, settings.DOWNSTREAM_VERSIONS, settings.DRY_RUN, settings.JSON],
}


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_every_command_has_its_settings_flags_with_their_help_and_default(command):
    result = run_hubfuse(command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for setting in COMMAND_FLAGS[command]:
        assert f"{setting.flag} " in text, setting.flag
        assert " ".join(setting.help.split()[:6]) in text, setting.flag
        if setting.default not in (None, (), False):
            assert f"[default: {setting.default}]" in text, setting.flag


def test_a_bad_flag_value_is_a_usage_error(tmp_path):
    for args, needle in [
        (["--mode", "fast"], "'fast' is not one of"),
        (["--timeout", "soon"], "'soon' is not"),
    ]:
        result = run_hubfuse("check", str(tmp_path), *args)
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr


SAMPLES = {
    "HF_ENDPOINT": ("http://127.0.0.1:9", "'http://127.0.0.1:9'"),
    "HF_TOKEN": ("hf_sample\n", "'hf_sample\\n'"),
    "HUBFUSE_DEBUG": ("0", "True"),
    "HUBFUSE_DOWNSTREAM_VERSIONS": (" ==5.24.0 ", "'==5.24.0'"),
    "HUBFUSE_DOWNSTREAM_JOBS": ("3", "3"),
    "HUBFUSE_ENVS": ("/tmp/envs", "PosixPath('/tmp/envs')"),
    "UV_CACHE_DIR": ("/tmp/uv", "PosixPath('/tmp/uv')"),
    "HUBFUSE_RELEASES_TTL_S": ("5", "5.0"),
    "HUBFUSE_RETRIES": ("7", "7"),
    "HUBFUSE_RETRY_BASE_S": ("0.5", "0.5"),
    "HUBFUSE_ERROR_BACKOFF_S": ("10", "10.0"),
    "HUBFUSE_LEDGER_FLUSH_EVERY": ("4", "4"),
    "HUBFUSE_LEDGER_FLUSH_S": ("9", "9.0"),
    "HUBFUSE_KILL_SWITCH": ("yes", "True"),
    "HUBFUSE_NO_VERDICT_CACHE": ("1", "True"),
    "HUBFUSE_CACHE": ("/tmp/verdicts", "PosixPath('/tmp/verdicts')"),
    "HUBFUSE_CELL_CACHE": ("none", "'none'"),
    "HUBFUSE_HUB_DATA": ("/tmp/hub", "PosixPath('/tmp/hub')"),
}
PRINT_SETTINGS = (
    "from hubfuse import settings; print({s.env: repr(s.value()) for s in settings.ENVIRONMENT_SETTINGS})"
)


def _values_in_a_fresh_process(env: dict[str, str]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    return ast.literal_eval(result.stdout)


def test_every_environment_setting_is_read_from_its_variable(tmp_path):
    assert sorted(SAMPLES) == sorted(s.env for s in settings.ENVIRONMENT_SETTINGS if s.env)
    base = hubfuse_env("http://unused", tmp_path, None)
    unset = {k: v for k, v in base.items() if k not in SAMPLES}
    assert _values_in_a_fresh_process(unset) == {
        s.env: repr(s.default) for s in settings.ENVIRONMENT_SETTINGS
    }
    given = _values_in_a_fresh_process({**unset, **{name: raw for name, (raw, _) in SAMPLES.items()}})
    assert given == {name: parsed for name, (_, parsed) in SAMPLES.items()}


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("HUBFUSE_RETRIES", "many", ()),
        ("HUBFUSE_RETRY_BASE_S", "-1", ()),
        ("HUBFUSE_LEDGER_FLUSH_EVERY", "0", ()),
        ("HUBFUSE_LEDGER_FLUSH_S", "soon", ()),
        ("HUBFUSE_RELEASES_TTL_S", "a day", ("--downstream-versions", "==5.24.0")),
    ],
)
def test_a_command_reads_its_environment_settings_and_refuses_a_bad_value(
    hub, tmp_path, variable, value, args
):
    result = run_spec(hub, tmp_path, EMPTY_SELECTION, *args, **{variable: value})
    assert_one_line_error(result, 2, f"${variable}: ")


# Reads of the environment that are not hubfuse's settings: the worker's own variables, set by
# hubfuse for its child processes; transformers' USE_HUB_KERNELS, read as transformers reads it by
# the adapter the downstream probe loads by path where hubfuse is not importable.
INTERNAL_READS = {"hubfuse/fusion/worker.py", "hubfuse/fusion/transformers_fusion.py"}


def _reads_the_environment(node: ast.AST) -> bool:
    """os.environ.get / [...] / `in`, os.getenv, or importing them from os."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return (ast.unparse(node.func.value), node.func.attr) in {("os.environ", "get"), ("os", "getenv")}
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return ast.unparse(node.value) == "os.environ"
    if isinstance(node, ast.Compare):
        return ast.unparse(node.comparators[-1]) == "os.environ"
    if isinstance(node, ast.ImportFrom) and node.module == "os":
        return bool({alias.name for alias in node.names} & {"environ", "getenv"})
    return False


def test_only_settings_reads_the_environment():
    found = {}
    for path in sorted((REPO_ROOT / "hubfuse").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative in {"hubfuse/settings.py", *INTERNAL_READS}:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = [node.lineno for node in ast.walk(tree) if _reads_the_environment(node)]  # type: ignore[attr-defined]
        if lines:
            found[relative] = lines
    assert found == {}


def test_the_readme_table_is_the_declarations():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "hubfuse.settings"], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout == settings.markdown_table()
    assert f"<!-- settings table: python -m hubfuse.settings -->\n{result.stdout}<!-- end" in readme


def test_the_local_hub_data_folder_comes_from_its_variable(tmp_path):
    environ = hubfuse_env("http://unused", tmp_path, None, HUBFUSE_HUB_DATA=str(tmp_path / "hub-data"))
    result = run_hubfuse("hub", "token", "add", "alice", env=environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and (tmp_path / "hub-data").is_dir()
