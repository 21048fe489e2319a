"""The typed plan: what plan.json holds, how it round-trips, and what `resume` may change."""

import json

import pytest
from pydantic import ValidationError

from mupctl.plan import RESUMABLE, changed_fields, compile_plan, plan_changes, plan_hash, read_plan, write_plan
from mupctl.recipe import load_recipe


def plan(*overrides):
    return compile_plan(load_recipe(overrides=list(overrides)))


def test_plan_json_round_trips_and_its_hash_digests_it(tmp_path):
    p = plan("scaling.recipe=mup", "scaling.base.d_model=64", "optimizer.name=muon")
    write_plan(tmp_path / "plan.json", p)
    assert read_plan(tmp_path / "plan.json") == p
    assert plan_hash(p.to_json()) == p.hash
    assert p.train.steps == p.schedule.steps == 200 and p.launch.world_size == 1
    assert p.tokens_per_step == p.train.global_batch * p.model.seq_len
    assert plan("train.steps=7").hash == plan().hash and plan("model.d_model=256").hash != plan().hash


def test_a_damaged_or_foreign_plan_does_not_parse(tmp_path):
    good = plan().to_json()
    for bad in (good | {"version": 1}, good | {"extra": 1}, {k: v for k, v in good.items() if k != "train"},
                good | {"model": good["model"] | {"d_model": "wide"}}):
        (tmp_path / "plan.json").write_text(json.dumps(bad))
        with pytest.raises(ValidationError):
            read_plan(tmp_path / "plan.json")


def test_changed_fields_names_leaves_in_plan_order():
    assert changed_fields({"a": {"b": 1, "c": [1, 2]}, "d": 0}, {"d": 1, "a": {"b": 1, "c": [1, 3]}}) == \
        [("d", 0, 1), ("a.c.1", 2, 3)]
    assert changed_fields({"a": [1]}, {"a": [1, 2]}) == [("a", [1], [1, 2])]


@pytest.mark.parametrize("override,resumable,first_breaking", [
    ("train.steps=300", ["train.steps", "schedule.steps"], None),
    ("checkpoint.interval=7", ["checkpoint.interval"], None),
    ("launch.max_restarts=3", ["launch.max_restarts"], None),
    ("train.deterministic=true", ["train.deterministic"], None),
    ("train.seed=1", [], "train.seed"),
    ("train.grad_clip=0.5", [], "train.grad_clip"),
    ("data.source=synthetic", [], "data.source"),
    ("model.d_model=256", [f"summary.memory_per_gpu_bytes.{k}" for k in ("weights", "grads", "optimizer_state",
                                                                         "total")], "model.d_model"),
    ("optimizer.lr=1e-3", [], "roles.embedding.lr"),  # a recipe setting shows as its effect on the plan
])
def test_resume_may_change_only_the_resumable_fields(override, resumable, first_breaking):
    allowed, breaking = plan_changes(plan(), plan(override))
    assert [field for field, _, _ in allowed] == resumable
    assert (breaking[0][0] if breaking else None) == first_breaking
    assert all(not any(f == r or f.startswith(r + ".") for r in RESUMABLE) for f, _, _ in breaking)
    assert "hash" not in [f for f, _, _ in allowed + breaking]
