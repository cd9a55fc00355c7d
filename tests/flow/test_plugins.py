"""A stage kind from another installed distribution (tests/plugin) is found
through the `flow.stages` entry points and runs like a built-in one."""

from __future__ import annotations

import sys

from flow.registry import default_registry
from flow.testing import run_graph


def test_an_installed_distribution_adds_a_stage_kind():
    registry = default_registry()
    assert "stamp" in registry
    assert registry["stamp"].origin == "flow-example-stages"
    assert registry["merge"].origin == "flow"
    assert "stamp" not in default_registry(plugins=False)  # flow's own kinds only


def test_the_third_party_kind_runs_in_a_graph(tmp_path):
    sinks: dict[str, list] = {}
    result = run_graph(
        "version: 1\nnodes:\n"
        "  a: {pipe: [{sequence: {items: 7, batch: 3}}, {stamp: {value: ok}}, testing_sink]}\n",
        sinks=sinks,
        plugins=True,
        out_dir=tmp_path,
    )
    assert result.status == "completed" and result.errors == []
    records = [record for batch in sinks["a"] for record in batch]
    assert [(r["n"], r["stamp"]) for r in records] == [(n, "ok") for n in range(7)]
    assert result.counters["a"]["stamped"] == 7


def test_entry_points_read_as_importlib_metadata_reads_them():
    """flow reads the entry points from the metadata directories itself
    (importing importlib.metadata costs more than the rest of `flow
    validate`): it finds what importlib.metadata finds, plugin included."""
    from importlib.metadata import entry_points as reference

    from flow._entry_points import entry_points

    ours = sorted((p.name, p.value, p.distribution) for p in entry_points("flow.stages"))
    theirs = sorted((p.name, p.value, p.dist.name) for p in reference(group="flow.stages"))
    assert ours == theirs
    assert ("stamp", "flow_example_stages:KIND", "flow-example-stages") in ours


def test_entry_points_first_distribution_of_a_name_wins(tmp_path, monkeypatch):
    from importlib.metadata import entry_points as reference

    from flow._entry_points import entry_points

    def install(where, directory, name, text):
        info = tmp_path / where / directory
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1\n\nName: not a header\n")
        (info / "entry_points.txt").write_text(text)

    install("a", "My_Plugin-1.0.dist-info", "my-plugin", "# a comment\n[console_scripts]\nx = m:f\n\n[flow.stages]\none = m.sub:KIND\n  two=m:OTHER [extra]\n")
    install("b", "my.plugin-2.0.dist-info", "My.Plugin", "[flow.stages]\nthree = n:KIND\n")
    install("b", "other.egg-info", "other", "[flow.stages]\nfour = o:KIND\n")
    paths = [str(tmp_path / "a"), str(tmp_path / "missing"), str(tmp_path / "b")]
    found = [(p.name, p.value, p.distribution) for p in entry_points("flow.stages", paths)]
    assert found == [("one", "m.sub:KIND", "my-plugin"), ("two", "m:OTHER [extra]", "my-plugin"), ("four", "o:KIND", "other")]
    monkeypatch.setattr(sys, "path", paths)
    assert found == [(p.name, p.value, p.dist.name) for p in reference(group="flow.stages")]


def test_a_kind_is_loaded_when_first_looked_up():
    import pytest

    from flow.registry import Registry

    merge = default_registry(plugins=False)["merge"]
    loads = []
    registry = Registry()
    registry.add_lazy("merge", lambda: loads.append("merge") or merge)
    assert "merge" in registry and registry.names() == ["merge"] and registry.suggest("merg") == "merge"
    assert loads == []
    assert registry["merge"] is merge and registry["merge"] is merge
    assert loads == ["merge"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(merge)


def test_entry_points_beside_a_zip_on_the_path_come_from_importlib_metadata(tmp_path):
    import zipfile

    from flow._entry_points import entry_points

    info = tmp_path / "site" / "my_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[flow.stages]\none = m:KIND\n")
    zipped = tmp_path / "lib.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("other-2.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: other\nVersion: 2.0\n")
        archive.writestr("other-2.0.dist-info/entry_points.txt", "[flow.stages]\ntwo = o:KIND\n")
    found = entry_points("flow.stages", [str(tmp_path / "site"), str(zipped)])
    assert [(p.name, p.value, p.distribution) for p in found] == [("one", "m:KIND", "my-plugin"), ("two", "o:KIND", "other")]
