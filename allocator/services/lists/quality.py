"""The design quality report of a trial's lists: computed, as a page, as a PDF (RND-01, REP-01)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict
from allocator.services.lookups import current_definition, get_trial
from allocator.trialdef import BlockRandomization, TrialDefinition

if TYPE_CHECKING:
    from allocator.randomization.quality import QualityReport

# --- quality report (RND-01, REP-01) ----------------------------------------------------------


def quality_report(ctx: ServiceContext, trial_code: str) -> tuple[TrialDefinition, QualityReport]:
    """The design quality report for the trial's configured design and sample size, beside the
    usual alternatives (statistician only: it shows the block sizes)."""
    from allocator.randomization import quality  # noqa: PLC0415 - numpy is imported only when a report is asked for

    with ctx.db.reading() as session:
        definition = current_definition(session, get_trial(session, trial_code))
    if len(definition.arms) != 2 or definition.ratio_total != 2:
        raise Conflict("the quality report covers two-arm 1:1 designs only")
    randomization = definition.randomization
    if isinstance(randomization, BlockRandomization):
        design: object = quality.PermutedBlocks(tuple(randomization.block_sizes))
    else:
        raise Conflict(
            "the quality report covers permuted-block designs only (minimization is simulated elsewhere)"
        )
    report = quality.quality_report(
        design,  # type: ignore[arg-type]
        definition.target_sample_size,
        quality.standard_alternatives(design),  # type: ignore[arg-type]
        simulation_seed=20260302,
        simulations=20_000,
        stratum_sizes=quality.stratum_sizes_for(definition.target_sample_size, len(definition.strata())),
    )
    return definition, report


@dataclass(frozen=True, slots=True)
class QualityDocument:
    code: str
    text: str
    balance_svg: str
    distribution_svg: str


def quality_document(ctx: ServiceContext, trial_code: str) -> QualityDocument:
    from allocator.printing import quality_report as printing_quality_report  # noqa: PLC0415 - numpy only when asked for

    definition, report = quality_report(ctx, trial_code)
    return QualityDocument(
        code=definition.code,
        text=printing_quality_report.render_text(report),
        balance_svg=printing_quality_report.render_svg_balance(report),
        distribution_svg=printing_quality_report.render_svg_imbalance_distribution(report),
    )


def quality_pdf(ctx: ServiceContext, trial_code: str) -> bytes:
    from allocator.printing import quality_report as printing_quality_report  # noqa: PLC0415 - numpy only when asked for
    from allocator.version import __version__  # noqa: PLC0415

    definition, report = quality_report(ctx, trial_code)
    return printing_quality_report.render_pdf(
        report,
        title=f"Randomization design quality - {definition.code}",
        generated_at=ctx.now().strftime("%Y-%m-%d %H:%M UTC"),
        software_version=__version__,
        test_mode=not ctx.settings.is_production,
    )
