"""megatron_sicog/recipe: dependencies from inputs -> outputs, shard names, blends, the local runner."""
import subprocess

import pytest

from megatron_sicog.recipe.graph import Shard, Stage, Step, dependencies, external_inputs, shard_path
from megatron_sicog.recipe.local import LocalRunner, StageFailed, local_command
from megatron_sicog.recipe.stages import blend


def test_dependencies_follow_the_last_writer_and_directories():
    graph = [Stage("a", "t.py", (), outputs=("run/data",)),
             Stage("b", "t.py", (), inputs=("run/data/x.jsonl",), outputs=("run/idx/x",)),
             Stage("c", "t.py", (), inputs=("run/idx/x", "run/data"), outputs=("run/idx/x",)),
             Stage("d", "t.py", (), inputs=("run/idx/x", "run/idx/xy", "repo/file"))]
    assert dependencies(graph) == {"a": [], "b": ["a"], "c": ["b", "a"], "d": ["c"]}
    assert external_inputs(graph) == ["run/idx/xy", "repo/file"]  # a prefix is not a folder of another
    with pytest.raises(ValueError, match="named 'a'"):
        dependencies(graph + [Stage("a", "t.py", ())])


def test_shard_names_and_shard_commands():
    assert shard_path("gen/cod.jsonl", "3") == "gen/cod.shard3.jsonl"
    assert shard_path("run.d/idx/curated", "$I") == "run.d/idx/curated.shard$I"
    s = Stage("g", "tools/g.py", ("--output", "gen/cod.jsonl", "--resume"), shard=Shard("gen/cod.jsonl", "jsonl"))
    assert s.sharded("1", "4") == ["tools/g.py", "--output", "gen/cod.shard1.jsonl", "--resume",
                                   "--shard-index", "1", "--num-shards", "4"]


def test_blend_leaves_out_zero_weights():
    assert blend([(1.0, "a"), (0.0, "b")]) == ["a"]
    assert blend([(0.0, "a"), (1.0, "b")]) == ["b"]
    assert blend([(0.75, "a"), (0.25, "b")]) == ["0.75", "a", "0.25", "b"]


def test_local_runner_markers_commands_and_failure(tmp_path, monkeypatch):
    ran = []

    def fake(cmd, **kw):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if "bad.py" in cmd else 0)

    monkeypatch.setattr(subprocess, "run", fake)
    steps = STEP_CALLS
    steps.clear()
    runner = LocalRunner(tmp_path, python="py")
    graph = [Stage("one", "tools/one.py", ("--x", "a b")), Step("glue", "tests.test_recipe_graph:_record_step",
                                                                 {"x": 1}),
             Stage("two", "tools/two.py", (), nproc=2)]
    runner.run_all(graph)
    assert local_command(graph[2], "py") == ["py", "-m", "torch.distributed.run", "--standalone",
                                             "--nproc-per-node", "2", "tools/two.py"]
    assert steps == [1] and len(ran) == 2 and set(runner.timings) == {"one", "two"}
    text = (tmp_path / "commands.sh").read_text()
    assert "\n# one\npy tools/one.py --x 'a b'\n" in text
    LocalRunner(tmp_path, python="py").run_all(graph)  # resumed: both stages done, the step runs again
    assert len(ran) == 2 and steps == [1, 1]
    with pytest.raises(StageFailed, match="stage bad failed"):
        runner.run(Stage("bad", "bad.py", ()))
    assert not (tmp_path / ".done" / "bad").exists()


STEP_CALLS = []


def _record_step(x):  # the step of the local runner's test
    STEP_CALLS.append(x)
