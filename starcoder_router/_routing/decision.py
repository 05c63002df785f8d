"""The routing decision: which deployment serves a request, which ones follow, and why.

Pure: no I/O, no clock of its own. Each deployment passes a row of small filters; every filter
that refuses records its reason, so `explain()` comes for free. The survivors are ranked by the
policy's objective; the first is chosen, the rest are the fallbacks in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from .._errors import NoRouteError
from .catalog import Capability, Deployment, Variant
from .cost import actual_cost_nano, nano_to_usd, usd_to_nano
from .fit import Fit, NoFit, PromptCounts, TrimReport, fit_prompt
from .policy import CostPolicy, Objective
from .render import Rendered, has_fim_sentinels
from .request import CompletionRequest
from .selfhosted import SelfHostedPrice
from .tokens import CountKind

__all__ = [
    "BudgetRouting", "Candidate", "DeploymentHealth", "RoutingDecision", "StaticCache", "decide",
    "servable",
]

# Typical bytes per token of code (stdlib Python, C, JS averages): used only to turn a byte bound
# into an expected token count for ranking, never to prove a fit or to reserve budget.
_BYTES_PER_TOKEN = 3.5


class DeploymentHealth(NamedTuple):
    """What the router has observed of a deployment, as the decision needs it."""

    latency_s: float | None = None
    ttft_s: float | None = None
    cooling_until: float | None = None
    reason: str = ""


class BudgetRouting(NamedTuple):
    """Constraints that budgets put on this decision (computed by the router from its store)."""

    max_worst_case_nano: int | None = None
    local_only: bool = False
    force_cheapest: bool = False
    note: str = ""


class Candidate(NamedTuple):
    """One deployment as the decision saw it."""

    deployment: Deployment
    eligible: bool
    reasons: tuple[str, ...] = ()
    prompt_tokens: int | None = None
    count_kind: CountKind | None = None
    worst_case_nano: int | None = None
    expected_nano: int | None = None
    expected_latency_s: float | None = None
    quality: float | None = None
    trimmed: TrimReport | None = None
    rendered: Rendered | None = None
    cooling_until: float | None = None
    cooling_reason: str = ""
    # A local deployment's effective price from its hourly cost (`selfhosted.py`), or None.
    self_hosted: SelfHostedPrice | None = None

    @property
    def worst_case_usd(self) -> float | None:
        return None if self.worst_case_nano is None else nano_to_usd(self.worst_case_nano)

    @property
    def expected_usd(self) -> float | None:
        return None if self.expected_nano is None else nano_to_usd(self.expected_nano)


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome of routing one request.

    `chosen` is the deployment to try first, `fallbacks` the others in order, `candidates` every
    deployment with the reasons it was refused. `explain()` renders it all as a table.
    """

    request: CompletionRequest
    candidates: tuple[Candidate, ...]
    ranked: tuple[Candidate, ...]
    objective: Objective
    notes: tuple[str, ...] = ()
    # The policy's `count_local_spend`, for the self-hosted lines of `explain()`.
    local_spend_counted: bool = False

    @property
    def chosen(self) -> Deployment:
        if not self.ranked:
            raise NoRouteError(self)
        return self.ranked[0].deployment

    @property
    def chosen_candidate(self) -> Candidate:
        if not self.ranked:
            raise NoRouteError(self)
        return self.ranked[0]

    @property
    def fallbacks(self) -> tuple[Deployment, ...]:
        return tuple(c.deployment for c in self.ranked[1:])

    @property
    def counts_estimated(self) -> bool:
        """True when some prompt token count behind this decision is an estimate (no
        tokenizer): a fit it proves may still meet the provider's context-length error."""
        return any(c.count_kind == "estimate" for c in self.candidates)

    def candidate(self, name: str) -> Candidate:
        for c in self.candidates:
            if c.deployment.name == name:
                return c
        raise KeyError(name)

    def explain(self) -> str:
        """A readable table: rank, deployment, tokens, costs, and why each was refused."""
        rank = {id(c): i + 1 for i, c in enumerate(self.ranked)}
        header = ("#", "deployment", "window", "prompt tokens", "worst $", "expected $", "status")
        rows = [header]
        ordered = list(self.ranked) + [c for c in self.candidates if id(c) not in rank]
        for c in ordered:
            d = c.deployment
            tokens = _fmt_tokens(c)
            status = "chosen" if rank.get(id(c)) == 1 else (
                "fallback" if id(c) in rank else "refused: " + "; ".join(c.reasons)
            )
            if c.trimmed is not None and id(c) in rank:
                status += f" ({c.trimmed.describe()})"
            if c.cooling_until is not None and id(c) in rank:
                status += " (cooling down)"
            deadline = d.first_token_deadline(self.request.first_token_timeout_s)
            if deadline is not None and id(c) in rank:
                status += f" (first token within {deadline:g} s)"
            rows.append((
                str(rank.get(id(c), "-")),
                d.name,
                str(d.context_window),
                tokens,
                _fmt_usd(c.worst_case_usd),
                _fmt_usd(c.expected_usd),
                status,
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = []
        for r in rows:
            cells = [r[i].ljust(widths[i]) for i in range(len(widths))]
            lines.append("  ".join([*cells, r[-1]]).rstrip())
        lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
        head = f"objective: {self.objective}; mode: {self.request.kind}; " \
               f"max_tokens: {self.request.max_tokens}"
        notes = list(self.notes)
        notes.extend(_self_hosted_notes(self.candidates, self.local_spend_counted))
        if self.counts_estimated:
            # How to get exact counts is logged once (`tokens.estimate_notice`), with advice
            # that fits the caller and what is installed; the table only marks the estimates.
            notes.append("prompt tokens marked ~ are estimated (no tokenizer found)")
        return "\n".join([head, *notes, *lines])


def _self_hosted_notes(candidates: tuple[Candidate, ...], counted: bool) -> list[str]:
    """One line per local deployment priced by the hour: its effective price and its basis."""
    lines = [f"self-hosted price of {c.deployment.name}: {c.self_hosted.describe()}"
             for c in candidates if c.self_hosted is not None]
    if lines:
        lines.append("(local spend counted: budgets hold and book that price)" if counted else
                     "(expected $ ranks by that price; budgets hold and book nothing for local "
                     "deployments unless the policy sets count_local_spend)")
    return lines


def _fmt_tokens(c: Candidate) -> str:
    if c.prompt_tokens is None:
        return "-"
    mark = {"exact": "", "bound": "<=", "estimate": "~"}[c.count_kind or "exact"]
    return f"{mark}{c.prompt_tokens}"


def _fmt_usd(v: float | None) -> str:
    return "-" if v is None else f"{v:.6f}"


_MODE_CAPABILITY: dict[str, Capability] = {"prompt": "completion", "fim": "fim", "chat": "chat"}

_CheapFilter = Callable[["_Context", Deployment, Variant | None], "str | None"]


class _Context(NamedTuple):
    request: CompletionRequest
    policy: CostPolicy
    provider_status: Mapping[str, str | None]
    needs: tuple[Capability, ...]
    budget: BudgetRouting | None


def _f_variant(ctx: _Context, dep: Deployment, var: Variant | None) -> str | None:
    return None if var is not None else f"unknown variant {dep.variant!r}"


def _f_provider_ready(ctx: _Context, dep: Deployment, var: Variant | None) -> str | None:
    if dep.provider not in ctx.provider_status:
        return f"unknown provider {dep.provider!r}"
    return ctx.provider_status[dep.provider]


def _f_policy_providers(ctx: _Context, dep: Deployment, var: Variant | None) -> str | None:
    p = ctx.policy
    if dep.provider in p.deny_providers:
        return f"provider {dep.provider!r} denied by policy"
    if p.allow_providers is not None and dep.provider not in p.allow_providers:
        return f"provider {dep.provider!r} not in the policy's allowed providers"
    if ctx.budget is not None and ctx.budget.local_only and not dep.is_local:
        return "budget exhausted: local deployments only"
    return None


def _f_capabilities(ctx: _Context, dep: Deployment, var: Variant | None) -> str | None:
    missing = [c for c in ctx.needs if c not in dep.capabilities]
    return f"lacks {', '.join(missing)}" if missing else None


def _f_quality(ctx: _Context, dep: Deployment, var: Variant | None) -> str | None:
    floor = ctx.policy.min_quality
    if floor is None or var is None:
        return None
    score = var.score(floor.benchmark)
    if score is None:
        return f"no {floor.benchmark} score for {var.id}"
    if score < floor.score:
        return f"{floor.benchmark} {score:g} < {floor.score:g}"
    return None


_CHEAP_FILTERS: tuple[_CheapFilter, ...] = (
    _f_variant,
    _f_provider_ready,
    _f_policy_providers,
    _f_capabilities,
    _f_quality,
)


def servable(deployments: tuple[Deployment, ...], *, variants: Mapping[str, Variant],
             policy: CostPolicy, provider_status: Mapping[str, str | None]
             ) -> tuple[Deployment, ...]:
    """The deployments some request could reach now: a known variant, a provider that is ready
    (key set), allowed by the policy and above its quality floor. What a model list shows: the
    filters that look at no request, with no capability asked for."""
    ctx = _Context(_ANY_REQUEST, policy, provider_status, (), None)
    return tuple(d for d in deployments
                 if all(f(ctx, d, variants.get(d.variant)) is None for f in _CHEAP_FILTERS))


_ANY_REQUEST = CompletionRequest(prompt="", max_tokens=1)


def decide(
    request: CompletionRequest,
    rendered: Rendered,
    *,
    deployments: tuple[Deployment, ...],
    variants: Mapping[str, Variant],
    policy: CostPolicy,
    provider_status: Mapping[str, str | None],
    counts: PromptCounts,
    health: Mapping[str, DeploymentHealth] | None = None,
    budget: BudgetRouting | None = None,
    now: float = 0.0,
    static: StaticCache | None = None,
    self_hosted: Mapping[str, SelfHostedPrice] | None = None,
) -> RoutingDecision:
    """Route `request` (already rendered) over `deployments`. Never raises for no route: the
    caller checks `decision.ranked` (the router raises `NoRouteError`).

    `static` memoises what does not depend on the request itself (provider readiness, policy,
    capabilities, quality), per kind of request; pass the same dict while `deployments`,
    `variants`, `policy` and `provider_status` stay the same. `self_hosted` gives local
    deployments priced by the hour their effective price per token, by deployment name."""
    kind = request.kind
    raw_fim = kind == "prompt" and has_fim_sentinels(rendered.prompt)
    needs: tuple[Capability, ...] = ("fim" if raw_fim else _MODE_CAPABILITY[kind],)
    if request.response_format is not None:
        needs += ("structured_output",)
    if request.stream:
        needs += ("streaming",)
    cap_nano = (
        usd_to_nano(policy.max_cost_per_request_usd)
        if policy.max_cost_per_request_usd is not None else None
    )
    budget_nano = budget.max_worst_case_nano if budget is not None else None
    max_tokens = request.max_tokens
    expected_out = min(policy.expected_output_tokens or max_tokens, max_tokens)
    # The tightest money limit a candidate must respect, for tightening byte-bounded counts.
    limit = 1 << 62
    if cap_nano is not None:
        limit = min(limit, cap_nano)
    if budget_nano is not None:
        limit = min(limit, budget_nano)

    key = (needs, budget is not None and budget.local_only)
    rows = static.get(key) if static is not None else None
    if rows is None:
        ctx = _Context(request, policy, provider_status, needs, budget)
        rows = _static_rows(ctx, deployments, variants)
        if static is not None:
            static[key] = rows
    counted = policy.count_local_spend
    candidates: list[Candidate] = []
    eligible: list[tuple[Candidate, _Row]] = []
    for row in rows:
        if row.refused is not None:
            candidates.append(row.refused)
            continue
        cap = row.dep.max_output_tokens
        if cap is not None and max_tokens > cap:
            candidates.append(Candidate(
                row.dep, False, (f"max_tokens {max_tokens} > the deployment's {cap}",),
                quality=row.quality))
            continue
        # Health and self-hosted prices are empty unless something was observed or a local
        # deployment is priced by the hour: then these cost nothing.
        price = self_hosted.get(row.dep.name) if self_hosted else None
        cand = _evaluate(row, rendered, request, counts,
                         health.get(row.dep.name) if health else None, now, expected_out,
                         cap_nano, budget_nano, limit, price, counted)
        candidates.append(cand)
        if cand.eligible:
            eligible.append((cand, row))

    objective: Objective = policy.objective
    notes: tuple[str, ...] = ()
    if budget is not None and budget.force_cheapest and objective != "cheapest":
        objective = "cheapest"
    if budget is not None and budget.note:
        notes = (budget.note,)
    return RoutingDecision(request, tuple(candidates), _rank(eligible, objective), objective,
                           notes, counted)


class _Row(NamedTuple):
    """A deployment as every request of one kind sees it (worked out once per router and kind
    of request): its variant and quality, the refused candidate when a filter that ignores the
    request's text rules it out, the latency prior's parts, and its static place in the
    ranking (local first if the policy prefers it, then the policy's provider order)."""

    dep: Deployment
    var: Variant | None
    quality: float | None
    refused: Candidate | None
    overhead_s: float
    tokens_per_s: float
    preference: tuple[bool, int]


StaticCache = dict[tuple[tuple[Capability, ...], bool], list[_Row]]


def _static_rows(ctx: _Context, deployments: tuple[Deployment, ...],
                 variants: Mapping[str, Variant]) -> list[_Row]:
    policy = ctx.policy
    prefer = {p: i for i, p in enumerate(policy.prefer_providers)}
    rows: list[_Row] = []
    for dep in deployments:
        var = variants.get(dep.variant)
        quality = var.score(policy.ranking_benchmark) if var is not None else None
        reasons = tuple(r for f in _CHEAP_FILTERS if (r := f(ctx, dep, var)) is not None)
        refused = Candidate(dep, False, reasons, quality=quality) if reasons else None
        # The latency prior, for deployments not yet observed: a fixed overhead (the time to
        # first token the deployment was measured at by `doctor --write`, else network for
        # hosted and none for local) plus decode time, slower for bigger models unless the
        # deployment says its speed.
        if dep.tokens_per_second:
            tps = dep.tokens_per_second
        else:
            billions = (var.parameters if var is not None else 15e9) / 1e9
            tps = 400.0 / max(billions, 1.0)
        overhead = dep.ttft_s if dep.ttft_s is not None else 0.05 if dep.is_local else 0.3
        preference = (policy.prefer_local and not dep.is_local,
                      prefer.get(dep.provider, len(prefer)))
        rows.append(_Row(dep, var, quality, refused, overhead, tps, preference))
    return rows


def _worst_nano(dep: Deployment, prompt: int, out: int, seconds: float,
                price: SelfHostedPrice | None, counted: bool) -> int:
    """What budgets hold: token prices and hosted hourly time, plus the self-hosted price when
    the policy counts local spend."""
    cost = actual_cost_nano(dep, prompt, out, seconds)
    return cost + price.cost_nano(prompt + out) if counted and price is not None else cost


def _evaluate(row: _Row, rendered: Rendered, request: CompletionRequest, counts: PromptCounts,
              hv: DeploymentHealth | None, now: float, expected_out: int, cap_nano: int | None,
              budget_nano: int | None, limit: int, price: SelfHostedPrice | None,
              counted: bool) -> Candidate:
    """A deployment that passed the static filters: fit the prompt, cost it, and check the
    money limits. `price`: a local deployment's self-hosted price, which ranks it; budgets hold
    it too when `counted`."""
    dep, quality, max_tokens = row.dep, row.quality, request.max_tokens
    fit = fit_prompt(rendered, window=dep.context_window, max_tokens=max_tokens,
                     counts=counts, allow_trim=request.allow_trim)
    if isinstance(fit, NoFit):
        return Candidate(dep, False, (fit.reason,), fit.prompt_tokens, fit.count_kind,
                         quality=quality)
    latency = (hv.latency_s if hv is not None and hv.latency_s is not None
               else row.overhead_s + expected_out / row.tokens_per_s)
    # A byte-bounded count is tightened by counting only when the bound alone would break a
    # cost cap or budget.
    seconds = latency if dep.usd_per_hour else 0.0
    worst = _worst_nano(dep, fit.prompt_tokens, max_tokens, seconds, price, counted)
    if worst > limit and fit.count_kind == "bound":
        n, kind = counts.count(fit.rendered.prompt)
        fit = Fit(fit.rendered, n, kind, fit.trimmed)
        worst = _worst_nano(dep, n, max_tokens, seconds, price, counted)
    reasons = []
    if cap_nano is not None and worst > cap_nano:
        reasons.append(f"worst-case cost ${nano_to_usd(worst):.6f} > per-request cap "
                       f"${nano_to_usd(cap_nano):.6f}")
    if budget_nano is not None and worst > budget_nano:
        reasons.append(f"worst-case cost ${nano_to_usd(worst):.6f} > remaining budget "
                       f"${nano_to_usd(budget_nano):.6f}")
    expected_in = (fit.prompt_tokens if fit.count_kind != "bound"
                   else int(fit.prompt_tokens / _BYTES_PER_TOKEN) + 1)
    expected = actual_cost_nano(dep, expected_in, expected_out, latency)
    if price is not None:  # ranks by the self-hosted price whether budgets count it or not
        expected += price.cost_nano(expected_in + expected_out)
    cooling = hv.cooling_until if hv is not None and hv.cooling_until is not None \
        and hv.cooling_until > now else None
    return Candidate(dep, not reasons, tuple(reasons), fit.prompt_tokens, fit.count_kind, worst,
                     expected, latency, quality, fit.trimmed, fit.rendered, cooling,
                     hv.reason if cooling is not None and hv is not None else "", price)


def _rank(eligible: list[tuple[Candidate, _Row]], objective: Objective) -> tuple[Candidate, ...]:
    """Cooling deployments last; then local first if the policy prefers it, then the policy's
    provider order; then the objective; the name breaks ties."""
    if len(eligible) < 2:
        return tuple(c for c, _ in eligible)
    keyed: list[tuple[tuple[object, ...], Candidate]]
    if objective == "balanced":
        max_cost = max(c.expected_nano or 0 for c, _ in eligible) or 1
        max_lat = max(c.expected_latency_s or 0.0 for c, _ in eligible) or 1.0
        max_q = max(c.quality or 0.0 for c, _ in eligible) or 1.0
        keyed = [((c.cooling_until is not None, *r.preference,
                   (c.expected_nano or 0) / max_cost + (c.expected_latency_s or 0.0) / max_lat
                   - (c.quality or 0.0) / max_q, c.deployment.name), c) for c, r in eligible]
    elif objective == "quality":
        keyed = [((c.cooling_until is not None, *r.preference, -(c.quality or 0.0),
                   c.expected_nano, c.deployment.name), c) for c, r in eligible]
    elif objective == "latency":
        keyed = [((c.cooling_until is not None, *r.preference, c.expected_latency_s,
                   c.expected_nano, c.deployment.name), c) for c, r in eligible]
    else:
        keyed = [((c.cooling_until is not None, *r.preference, c.expected_nano,
                   -(c.quality or 0.0), c.deployment.name), c) for c, r in eligible]
    keyed.sort(key=_first)
    ranked = [c for _, c in keyed]
    if ranked[-1].cooling_until is not None:
        # Among deployments that are all cooling down, the one that recovers first goes first.
        ready = [c for c in ranked if c.cooling_until is None]
        cooling = sorted((c for c in ranked if c.cooling_until is not None),
                         key=lambda c: c.cooling_until or 0.0)
        ranked = ready + cooling
    return tuple(ranked)


def _first(item: tuple[tuple[object, ...], Candidate]) -> tuple[object, ...]:
    return item[0]
