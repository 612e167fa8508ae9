"""Loading trial definitions: created, versioned, audited; invalid files change nothing (VAL-03)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from allocator.models import AuditEvent, Base, Site, Trial, TrialDefinitionVersion
from allocator.services import trials
from allocator.services.context import ServiceContext
from allocator.services.errors import DefinitionLocked, ValidationFailed
from tests.support import CLI_ACTOR, COHORT_TRIAL, IFN_TRIAL, load_ifn

TEXT = IFN_TRIAL.read_text(encoding="utf-8")


def row_counts(ctx: ServiceContext) -> dict[str, int]:
    with ctx.db.reading() as session:
        return {
            name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in Base.metadata.tables.items()
        }


@pytest.mark.req("VAL-03")
def test_loading_creates_trial_sites_version_and_audit(ctx: ServiceContext) -> None:
    result = load_ifn(ctx)
    assert (result.trial_code, result.version, result.outcome) == ("IFNG-PAIS", 1, "created")
    assert result.sites_added == ("P1", "P2")
    with ctx.db.reading() as s:
        trial = s.execute(select(Trial)).scalar_one()
        assert trial.status == "setup" and trial.definition_version == 1
        assert [x.status for x in s.execute(select(Site).order_by(Site.code)).scalars()] == [
            "pending",
            "pending",
        ]
        version = s.execute(select(TrialDefinitionVersion)).scalar_one()
        assert version.source_text == TEXT and version.loaded_by_name == CLI_ACTOR.name
        actions = s.execute(
            select(AuditEvent.action).where(AuditEvent.chain == "IFNG-PAIS").order_by(AuditEvent.seq)
        ).scalars()
        assert list(actions) == ["trial.created", "trial.definition_loaded", "site.created", "site.created"]


def test_reloading_the_same_file_changes_nothing(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    before = row_counts(ctx)
    assert load_ifn(ctx).outcome == "unchanged"
    assert row_counts(ctx) == before


def test_a_changed_definition_becomes_a_new_version(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    changed = TEXT.replace(
        'name = "Paris site 2 (Dr de Roquetaillade)"', 'name = "Hôpital X (Dr de Roquetaillade)"'
    )
    changed = changed.replace('short_title = "IFN-gamma PAIS"', 'short_title = "IFN-g PAIS"')
    result = trials.load_trial(ctx, CLI_ACTOR, changed, source_name="v2.toml")
    assert (result.version, result.outcome) == (2, "new_version")
    with ctx.db.reading() as s:
        assert s.execute(select(Trial.short_title)).scalar_one() == "IFN-g PAIS"
        assert (
            s.execute(select(Site.name).where(Site.code == "P2")).scalar_one()
            == "Hôpital X (Dr de Roquetaillade)"
        )
        updates = s.execute(select(AuditEvent).where(AuditEvent.action == "site.updated")).scalars().all()
        assert len(updates) == 1 and "Paris site 2" in (updates[0].old_values or "")
        assert s.execute(select(func.count()).select_from(TrialDefinitionVersion)).scalar_one() == 2


@pytest.mark.req("VAL-03")
@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("ratio = { A = 1, B = 1 }", "ratio = { A = 1, C = 1 }", "allocation.ratio.C"),
        ("block_sizes = [2, 4, 6]", "block_sizes = [3, 4]", "randomization.block_sizes[0]"),
        ("target_sample_size = 170", "target_sample_size = []", "trial.target_sample_size"),
    ],
)
def test_invalid_file_is_refused_and_the_database_is_unchanged(
    ctx: ServiceContext, old: str, new: str, field: str
) -> None:
    load_ifn(ctx)
    before = row_counts(ctx)
    with pytest.raises(ValidationFailed) as caught:
        trials.load_trial(ctx, CLI_ACTOR, TEXT.replace(old, new), source_name="bad.toml")
    assert any(e.field == field for e in caught.value.errors), caught.value.errors
    assert "bad.toml" in caught.value.detail
    assert row_counts(ctx) == before


def test_sites_cannot_disappear(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    start = TEXT.index('[[sites]]\ncode = "P2"')
    end = TEXT.index("# --- What the public record")
    without_p2 = TEXT[:start] + TEXT[end:]
    with pytest.raises(DefinitionLocked, match="sites cannot be removed"):
        trials.load_trial(ctx, CLI_ACTOR, without_p2, source_name="v2.toml")


@pytest.mark.req("RND-10")
def test_allocation_cannot_change_under_a_production_list(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    with ctx.db.unit_of_work() as s:
        trial_id, definition_id = s.execute(
            select(Trial.id, TrialDefinitionVersion.id).join(
                TrialDefinitionVersion, TrialDefinitionVersion.trial_id == Trial.id
            )
        ).one()
        s.execute(
            text(
                "INSERT INTO randomization_list (trial_id, definition_id, mode, label, status, method, algorithm, "
                "algorithm_version, parameters_json, seed_sealed, seed_id, current_version, generated_at, "
                "generated_by_name) VALUES (:t, :d, 'production', 'X/PRODUCTION/1', 'active', 'permuted_blocks', "
                "'a', '1', '{}', :seed, 'id', 1, :now, 'x')"
            ),
            {"t": trial_id, "d": definition_id, "seed": b"x", "now": ctx.now().replace(tzinfo=None)},
        )
    with pytest.raises(DefinitionLocked, match="PRODUCTION randomization list"):
        trials.load_trial(
            ctx, CLI_ACTOR, TEXT.replace("block_sizes = [2, 4, 6]", "block_sizes = [4]"), source_name="v2"
        )
    # Anything that does not alter allocation may still change.
    ok = trials.load_trial(
        ctx, CLI_ACTOR, TEXT.replace('phase = "Phase 2/3"', 'phase = "Phase II/III"'), source_name="v2"
    )
    assert ok.outcome == "new_version"


def test_trial_summary_is_blinded_and_site_scoped(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    summary = trials.trial_summary(ctx, "IFNG-PAIS", None)
    assert [s.code for s in summary.sites] == ["P1", "P2"]
    assert summary.mode == "test"
    data = summary.as_json()
    assert "arms" not in data and "ratio" not in data
    with ctx.db.reading() as s:
        p1 = s.execute(select(Site.id).where(Site.code == "P1")).scalar_one()
    assert [s.code for s in trials.trial_summary(ctx, "IFNG-PAIS", frozenset({p1})).sites] == ["P1"]


@pytest.mark.req("RND-10")
def test_a_study_cannot_change_its_kind(ctx: ServiceContext) -> None:
    """Issue 20: a randomized trial's lists, subjects and kits mean nothing to a cohort (and the
    request guard finds a trial's kind from its definition in force): a new version keeps the kind."""
    load_ifn(ctx)
    cohort_text = COHORT_TRIAL.read_text(encoding="utf-8").replace(
        'code = "IMMUNOSEPSIS-4"', 'code = "IFNG-PAIS"'
    )
    before = row_counts(ctx)
    with pytest.raises(DefinitionLocked, match="cannot change its kind") as refused:
        trials.load_trial(ctx, CLI_ACTOR, cohort_text, source_name="cohort.toml")
    assert [e.field for e in refused.value.errors] == ["trial.kind"]
    assert row_counts(ctx) == before
