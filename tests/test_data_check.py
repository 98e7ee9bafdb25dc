"""``maskvlp data check``: per-file counts, the bad images listed, exit status 0 / 1 / 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maskvlp.cli import app
from maskvlp.config import WorldConfig
from maskvlp.data.synthetic import SyntheticWorld, export_albef_json

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Six training scenes with one image deleted, one corrupt, an empty and a surrogate caption; a clean test file."""
    tmp = tmp_path_factory.mktemp("check")
    world = SyntheticWorld(WorldConfig(seed=3, image_size=32, train_scenes=8, test_scenes=4))
    train_json, _ = export_albef_json(world, "train", tmp / "train", limit=6)
    _, test_json = export_albef_json(world, "test", tmp / "test", limit=3)
    entries = json.loads(train_json.read_text())
    images = list(dict.fromkeys(e["image"] for e in entries))
    root = train_json.parent
    (root / images[0]).unlink()
    (root / images[1]).write_bytes(b"not a png")
    entries += [{"image": images[2], "caption": "  "}, {"image": images[2], "caption": "a \ud83d caption"}]
    train_json.write_text(json.dumps(entries))
    return {"train": train_json, "test": test_json, "entries": len(entries),
            "missing": str(root / images[0]), "corrupt": str(root / images[1])}


def _args(exported: dict, train: bool = True) -> list[str]:
    test = [f"eval.test_json={exported['test']}", f"eval.image_root={exported['test'].parent}"]
    if not train:
        return test
    return [f"data.train_json=[{exported['train']}]", f"data.image_root={exported['train'].parent}", *test]


def test_check_counts_per_file(exported: dict) -> None:
    from maskvlp.data.check import BadImage, check_data

    calls: list[tuple[int, int]] = []
    report = check_data([exported["train"]], exported["train"].parent, exported["test"], exported["test"].parent,
                        progress=lambda done, total: calls.append((done, total)))
    train, test = report.files
    assert (train.kind, test.kind) == ("train", "test")
    assert (train.entries, train.empty, train.repaired_text) == (exported["entries"], 1, 1)
    assert (train.images, train.missing, train.unreadable) == (6, 1, 1)
    assert set(train.examples) == {BadImage(exported["missing"], "missing"),
                                   BadImage(exported["corrupt"], "cannot decode")}
    assert (test.entries, test.images, test.missing, test.unreadable, test.empty) == (3, 3, 0, 0, 0)
    assert not report.ok and report.bad_images == 2
    assert calls[-1] == (9, 9)


def test_cli_exit_1_lists_bad_images(exported: dict) -> None:
    result = runner.invoke(app, ["data", "check", *_args(exported)])
    assert result.exit_code == 1, result.output
    assert exported["missing"] in result.output and exported["corrupt"] in result.output
    assert "cannot decode" in result.output and "2 of 9 images" in result.output
    assert "pretrain.json" in result.output and "test.json" in result.output


def test_cli_exit_0_when_every_image_reads(exported: dict) -> None:
    result = runner.invoke(app, ["data", "check", *_args(exported, train=False)])
    assert result.exit_code == 0, result.output
    assert "all 3 images readable" in result.output


@pytest.mark.parametrize("args, expected", [
    ([], "nothing to check"),
    (["data.train_jsn=[a.json]"], "unknown config key 'data.train_jsn'"),
    (["data.train_json=[/no/such.json]"], "such.json: file not found"),
])
def test_cli_user_errors_give_one_line_and_status_2(args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["data", "check", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def test_cli_malformed_file_names_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "a.png", "caption": "x"}, {"caption": "y"}]))
    result = runner.invoke(app, ["data", "check", f"data.train_json=[{bad}]"])
    assert result.exit_code == 2 and 'bad.json: entry 1 has no "image" key' in result.output, result.output
