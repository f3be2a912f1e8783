"""Pairwise orders -> precedence graph -> topological sort -> the full compression chain (Shen et al., 2024).

Order of Compression (arXiv 2403.17447) builds its sequence in three steps, each a function here:

1. *Pairwise foundations* (paper Sec. 3): for every two methods A, B run A then B and B then A with the
   same settings, and let the better order win. The rule that decides a pair is a :class:`Protocol`, read from
   the study's ``protocol:`` block in the config (pre-registered before the runs) and recorded in every
   decision and in the ``order_pairwise`` table. What follows the paper: an order is better when it keeps more
   accuracy for its compression (abstract, Sec. 3), and BitOps is the cost. What the paper leaves open (as far
   as its abstract and introduction, all that could be read here, say): the tolerance below which two
   accuracies are equal, how orders of different cost are compared, how seeds are combined, and what a tie
   does; the protocol states each. Two operating points exist: ``matched_cost`` (:func:`at_matched_cost`: loss
   taken as linear in log2 of the BitOps reduction, both orders read off at the lesser one; equal accuracies go
   to the cheaper order) is the rule the ``order`` and ``order_vit`` studies were decided with, *after* their
   GPU runs (the study's README says so; it is :data:`LEGACY`, the default when a study has no protocol);
   ``pareto`` assumes no shape of the accuracy-cost curve: an order wins only if it is more accurate by more
   than the tolerance *and* not costlier by more than ``cost_tolerance``; more accurate but costlier is
   ``incomparable`` and adds no edge, like a tie.
2. *Precedence graph*: each win is an edge winner-first -> winner-second (:func:`precedence_edges`). The
   paper shows that inserting a third method between two keeps their order (checked by
   :func:`insertion_checks` on chains A+X+B vs B+X+A), so the pairwise edges compose.
3. *Topological sort* (:func:`topological_order`): Kahn's algorithm gives the full order (the paper finds
   distillation -> pruning -> quantization -> early exit); a cycle means no consistent order and is
   reported with its members, never broken silently.

Also here: the study's figures (the drawn precedence graph, accuracy against BitOps reduction for the
sorted, reverse and random orders) and tables (pairwise orders, every chain, insertion checks), registered by
name in ``slimbench.plots``, and the ``order`` chain deriver (``slimbench.derive``) that the workflow's
checkpoint and ``slimbench study`` call to turn the pairwise results into the chains to run next.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

from slimbench.derive import DERIVERS, Deriver
from slimbench.errors import ConfigError
from slimbench.lazy import lazy_module
from slimbench.plots import figure, pyplot, table
from slimbench.stages import BASE, StageCall, format_chain, parse_chain

pd = lazy_module("pandas")
nx = lazy_module("networkx")

# The paper's order of the four methods; qat and early_exit (methods/order_stages.py) are Q and E of the
# pre-registered study, quant and exit those of the order study.
ORDER_STAGES = ("distill", "prune", "quant", "qat", "exit", "early_exit")
SHORT = {"distill": "D", "prune": "P", "quant": "Q", "qat": "Q", "exit": "E", "early_exit": "E"}
TOLERANCE = 0.002  # LEGACY's tolerance: 0.2 accuracy points
TARGET_REDUCTION, TARGET_DROP = 100.0, 0.01  # the target: >= 100x BitOps within 1 point
LINE_STYLES = ("-", "--", "-.", ":")


def names(chain: str) -> tuple[str, ...]:
    return tuple(c.name for c in parse_chain(chain))


def short(chain_or_names: str | Sequence[str]) -> str:
    seq = names(chain_or_names) if isinstance(chain_or_names, str) else chain_or_names
    return "".join(SHORT.get(n, n) for n in seq) or "base"


# ----------------------------------------------------------------------------------------------- protocol
OPERATING_POINTS = ("matched_cost", "pareto")
TIES = ("fewer_bitops", "tie")
AGREEMENT = ("mean", "every_seed")


@dataclass(frozen=True)
class Protocol:
    """The pre-registered rule deciding each pair of orders (config ``protocol:``; schema in
    ``workflow/schemas/config.schema.yaml``).

    ``metric``: the metric compared (None: the study's task metric); ``operating_point``: ``matched_cost`` or
    ``pareto`` (module docstring); ``tolerance``: metric differences up to this are equal; ``cost_tolerance``:
    relative BitOps differences up to this are equal; ``agreement``: ``mean`` (the mean over seeds decides) or
    ``every_seed`` (besides, each seed's difference must have the mean's sign, else the pair is ``seeds
    disagree``, no edge); ``ties``: ``tie`` (equal metrics add no edge) or ``fewer_bitops`` (the cheaper order
    wins them); ``seeds``: the seeds that decide (None: the study's); ``random_orders``/``random_seed``: the
    random full orders run beside the sorted one and its reverse."""

    metric: str | None = None
    operating_point: str = "matched_cost"
    tolerance: float = TOLERANCE
    cost_tolerance: float = 0.01
    agreement: str = "mean"
    ties: str = "fewer_bitops"
    seeds: tuple[int, ...] | None = None
    random_orders: int = 2
    random_seed: int = 0

    REQUIRED = ("operating_point", "tolerance", "cost_tolerance", "agreement", "ties", "seeds")

    def __post_init__(self) -> None:
        for name, allowed in (("operating_point", OPERATING_POINTS), ("ties", TIES), ("agreement", AGREEMENT)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"protocol: {name}={getattr(self, name)!r} is not one of {list(allowed)}. "
                                  f"Fix: write one of them in the study's protocol block.")
        if self.agreement == "every_seed" and (self.ties == "fewer_bitops" or self.operating_point == "matched_cost"):
            raise ConfigError("protocol: agreement 'every_seed' compares each seed's metric difference with the "
                              "winner, which is not the metric's where cost decides (ties: fewer_bitops, or the "
                              "matched_cost operating point). Fix: agreement: mean, or pareto with ties: tie.")
        if self.tolerance < 0 or not 0 <= self.cost_tolerance < 1:
            raise ConfigError(f"protocol: tolerance={self.tolerance} and cost_tolerance={self.cost_tolerance} must "
                              "be >= 0 (cost_tolerance below 1). Fix: the study's protocol block.")

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> "Protocol":
        """The study's ``protocol:`` block (None: :data:`LEGACY`); unknown keys are an error."""
        if block is None:
            return LEGACY
        unknown = set(block) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"protocol: unknown key(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}.")
        missing = [k for k in cls.REQUIRED if k not in block]
        if missing:  # a pre-registered rule is written out in full, never completed by the legacy defaults
            raise ConfigError(f"protocol: {missing} missing. Fix: write every one of {list(cls.REQUIRED)} in the "
                              "study's protocol block.")
        seeds = block.get("seeds")
        return replace(LEGACY, **{**block, "seeds": None if seeds is None else tuple(seeds)})

    def record(self) -> dict[str, Any]:
        """As written to decisions and tables."""
        found = asdict(self)
        found["seeds"] = None if self.seeds is None else list(self.seeds)
        return found


LEGACY = Protocol()  # the rule the order and order_vit studies were decided with (changed after their runs)


def study_protocol(frame: pd.DataFrame, metric: str) -> tuple[Protocol, str]:
    """The protocol of the study whose runs ``frame`` holds (``frame.attrs["study"]``: the study's config, which
    the CLI attaches to the runs it hands to tables and figures; else :data:`LEGACY`) and the metric it compares."""
    protocol = Protocol.from_config((frame.attrs.get("study") or {}).get("protocol"))
    return protocol, protocol_metric(frame, metric, protocol)


def protocol_metric(frame: pd.DataFrame, metric: str, protocol: Protocol) -> str:
    """The protocol's metric (the study's task metric if it names none); it must be a column of the runs."""
    chosen = protocol.metric or metric
    if chosen not in frame.columns:
        raise ConfigError(f"protocol: metric '{chosen}' is not recorded in the runs (columns: "
                          f"{', '.join(map(str, frame.columns))}). Fix: name a recorded metric in the protocol block.")
    return chosen


# ----------------------------------------------------------------------------------------------- criterion
def at_matched_cost(metric_ab: float, metric_ba: float, bitops_ab: float, bitops_ba: float, base_metric: float,
                    base_bitops: float) -> tuple[float, float]:
    """Both orders' metric at the smaller of their two BitOps reductions.

    The paper compares two orders at the same compression. When the orders end at different costs (P then D
    loses P's savings, because D trains a fixed-size student), each order's loss is taken as a constant rate
    per halving of BitOps from the uncompressed model, and both are read off at the lesser reduction."""
    halvings_ab, halvings_ba = math.log2(base_bitops / bitops_ab), math.log2(base_bitops / bitops_ba)
    matched = min(halvings_ab, halvings_ba)
    if matched <= 0:
        return metric_ab, metric_ba
    return (base_metric - (base_metric - metric_ab) * matched / halvings_ab,
            base_metric - (base_metric - metric_ba) * matched / halvings_ba)


UNJUDGED = ("no common seeds", "missing seeds")  # judge_pair's reasons for not having compared at all


def judge_pair(ab: pd.Series, ba: pd.Series, bitops_ab: float, bitops_ba: float, base: tuple[float, float] | None,
               protocol: Protocol) -> tuple[int, str]:
    """(+1 A->B better, -1 B->A better, 0 no edge) and the reason, under ``protocol``; ``ab``/``ba``: the metric
    per seed (index: seed)."""
    chosen = set(ab.index) if protocol.seeds is None else set(protocol.seeds)
    seeds = sorted(set(ab.index) & set(ba.index) & chosen)
    if not seeds:
        return 0, UNJUDGED[0]
    if protocol.seeds is not None and len(seeds) < len(chosen):  # the protocol names its seeds: all must run
        return 0, UNJUDGED[1]
    ab, ba = ab.loc[seeds], ba.loc[seeds]
    if protocol.operating_point == "matched_cost":
        win = pair_winner(ab.mean(), ba.mean(), bitops_ab, bitops_ba, base, protocol.tolerance, protocol.ties,
                          protocol.cost_tolerance)
    else:
        win = pareto_winner(ab.mean(), ba.mean(), bitops_ab, bitops_ba, protocol)
        if win is None:
            return 0, "incomparable"
    if win == 0:
        return 0, "tie"
    differences = (ab - ba).to_numpy()
    if protocol.agreement == "every_seed" and not all(d * win > 0 for d in differences):
        return 0, "seeds disagree"
    return win, "won"


def pareto_winner(metric_ab: float, metric_ba: float, bitops_ab: float, bitops_ba: float,
                  protocol: Protocol) -> int | None:
    """+1/-1 when one order is more accurate by more than the tolerance and not costlier by more than
    ``cost_tolerance``; 0 for equal accuracy (or, with ``ties: fewer_bitops``, the cheaper order); None when
    the more accurate order is the costlier one (incomparable)."""
    cheaper = (1 if bitops_ab < (1 - protocol.cost_tolerance) * bitops_ba
               else -1 if bitops_ba < (1 - protocol.cost_tolerance) * bitops_ab else 0)
    if abs(metric_ab - metric_ba) <= protocol.tolerance:
        return cheaper if protocol.ties == "fewer_bitops" else 0
    better = 1 if metric_ab > metric_ba else -1
    return better if cheaper in (0, better) else None


def pair_winner(metric_ab: float, metric_ba: float, bitops_ab: float, bitops_ba: float,
                base: tuple[float, float] | None = None, tolerance: float = TOLERANCE,
                ties: str = "fewer_bitops", cost_tolerance: float = 0.01) -> int:
    """+1 if A->B is the better order, -1 if B->A, 0 for a tie (paper Sec. 3: the order that keeps more
    accuracy at the same compression wins). With ``base`` = (metric, BitOps) of the uncompressed model, orders
    of different cost are compared by :func:`at_matched_cost`; equal accuracy is decided by the lower cost
    (``ties="fewer_bitops"``) or is a tie; costs within ``cost_tolerance`` of each other are the same cost."""
    same_cost = abs(bitops_ab - bitops_ba) <= cost_tolerance * max(bitops_ab, bitops_ba)
    if base is not None and not same_cost:
        metric_ab, metric_ba = at_matched_cost(metric_ab, metric_ba, bitops_ab, bitops_ba, *base)
    if abs(metric_ab - metric_ba) > tolerance:
        return 1 if metric_ab > metric_ba else -1
    if not same_cost and ties == "fewer_bitops":
        return 1 if bitops_ab < bitops_ba else -1
    return 0


def with_reduction(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``bitops_reduction`` (base BitOps / BitOps, per seed) and ``drop`` (base metric - metric)."""
    data = frame.copy()
    base = data[data["chain"] == BASE].set_index(["dataset", "model", "seed"])
    key = list(zip(data["dataset"], data["model"], data["seed"]))
    data["bitops_reduction"] = [base["bitops"].get(k, math.nan) / b for k, b in zip(key, data["bitops"])]
    return data


def base_point(frame: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """(mean metric, mean BitOps) of the uncompressed model in a (dataset, model) panel, if it was run."""
    base = frame[frame["chain"] == BASE]
    return (base[metric].mean(), base["bitops"].mean()) if len(base) else None


def seed_metric(panel: pd.DataFrame, chain: str, metric: str) -> pd.Series:
    """The chain's metric per seed (mean over duplicate rows)."""
    return panel[panel["chain"] == chain].groupby("seed")[metric].mean()


def pairwise_table(frame: pd.DataFrame, metric: str, protocol: Protocol = LEGACY) -> pd.DataFrame:
    """One row per (dataset, model, unordered pair) whose both orders were run: means, stds, BitOps
    reductions, both metrics at matched cost (``matched_cost`` protocols), winner and why, the rule applied."""
    rows = []
    pairwise = frame["chain"].isin(pairwise_chains(frame["chain"].unique()))
    for (dataset, model), panel in frame.groupby(["dataset", "model"], sort=False):
        base = base_point(panel, metric)
        stats = panel[pairwise[panel.index]].groupby("chain").agg(
            mean=(metric, "mean"), std=(metric, "std"), bitops=("bitops", "mean"), seeds=("seed", "nunique"))
        done = set()
        for chain in stats.index:
            a, b = names(chain)
            reverse = next((c for c in stats.index if names(c) == (b, a)), None)
            if reverse is None or frozenset((a, b)) in done:
                continue
            done.add(frozenset((a, b)))
            ab, ba = stats.loc[chain], stats.loc[reverse]
            win, reason = judge_pair(seed_metric(panel, chain, metric), seed_metric(panel, reverse, metric),
                                     ab["bitops"], ba["bitops"], base, protocol)
            matched = (at_matched_cost(ab["mean"], ba["mean"], ab["bitops"], ba["bitops"], *base)
                       if base and protocol.operating_point == "matched_cost" else (math.nan, math.nan))
            first, second = (a, b) if win >= 0 else (b, a)
            rows.append({"dataset": dataset, "model": model, "A": a, "B": b,
                         f"{metric}_AB": ab["mean"], f"{metric}_AB_std": ab["std"],
                         f"{metric}_BA": ba["mean"], f"{metric}_BA_std": ba["std"],
                         "bitops_AB": ab["bitops"], "bitops_BA": ba["bitops"],
                         "reduction_AB": base[1] / ab["bitops"] if base else math.nan,
                         "reduction_BA": base[1] / ba["bitops"] if base else math.nan,
                         f"{metric}_AB_matched": matched[0], f"{metric}_BA_matched": matched[1],
                         "seeds": int(ab["seeds"]),
                         "winner": reason if win == 0 else f"{SHORT.get(first, first)}->{SHORT.get(second, second)}",
                         "first": None if win == 0 else first, "second": None if win == 0 else second,
                         "margin": abs(matched[0] - matched[1]) if not math.isnan(matched[0])
                         else abs(ab["mean"] - ba["mean"]),
                         "rule": rule_text(protocol, metric)})
    return pd.DataFrame(rows)


def rule_text(protocol: Protocol, metric: str) -> str:
    """The protocol in one cell of a table."""
    seeds = "all seeds" if protocol.seeds is None else "seeds " + ",".join(map(str, protocol.seeds))
    return (f"{protocol.metric or metric}, {protocol.operating_point}, tol {protocol.tolerance:g}, cost tol "
            f"{protocol.cost_tolerance:g}, {protocol.agreement} of {seeds}, ties: {protocol.ties}")


# ----------------------------------------------------------------------------------------------- graph
def precedence_edges(pairs: pd.DataFrame) -> list[tuple[str, str]]:
    """Winner-first edges of the non-tied pairs."""
    won = pairs.dropna(subset=["first"]) if len(pairs) else pairs
    return [(r["first"], r["second"]) for _, r in won.iterrows()]


@dataclass
class SortResult:
    """A full order, or the cycles that make one impossible (then ``order`` is None)."""

    order: list[str] | None
    cycles: list[list[str]] = field(default_factory=list)


def topological_order(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> SortResult:
    """networkx's topological sort; among ready nodes the earliest in ``nodes`` goes first (deterministic).
    A cycle gives no order: its members are reported (every simple cycle), never broken."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    rank = {n: i for i, n in enumerate(nodes)}
    try:
        return SortResult(list(nx.lexicographical_topological_sort(graph, key=rank.get)))
    except nx.NetworkXUnfeasible:
        return SortResult(None, sorted(rotated(c) for c in nx.simple_cycles(graph)))


def rotated(cycle: list[str]) -> list[str]:
    """The cycle from its smallest member on, in its own direction (each edge runs from a member to the next)."""
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]


def method_tokens(chains: Iterable[str]) -> dict[str, str]:
    """Each method's chain token as the pairwise chains write it (``prune`` -> ``prune-0.5``)."""
    tokens: dict[str, str] = {}
    for chain in chains:
        calls = parse_chain(chain)
        if len(calls) == 2 and calls[0].name != calls[1].name:
            for call in calls:
                tokens.setdefault(call.name, str(call))
    return tokens


def chain_of(order: Sequence[str], tokens: dict[str, str]) -> str:
    return format_chain([StageCall(*tokens[n].partition("-")[::2]) if "-" in tokens[n] else StageCall(n)
                         for n in order])


def random_orders(nodes: Sequence[str], count: int, seed: int, exclude: Iterable[Sequence[str]]) -> list[list[str]]:
    """Up to ``count`` distinct seeded permutations not in ``exclude``."""
    rng = random.Random(seed)
    seen = {tuple(e) for e in exclude}
    found: list[list[str]] = []
    for _ in range(1000):
        if len(found) == count or len(seen) == math.factorial(len(nodes)):
            break
        perm = list(nodes)
        rng.shuffle(perm)
        if tuple(perm) not in seen:
            seen.add(tuple(perm))
            found.append(perm)
    return found


def decide(pairs: pd.DataFrame, tokens: dict[str, str], random_count: int, seed: int,
           protocol: Protocol = LEGACY) -> dict[str, Any]:
    """The checkpoint's decision: the protocol applied, every pair's verdict, the sorted order, its reverse and
    random orders (as chains), or the cycles."""
    nodes = [n for n in ORDER_STAGES if n in tokens] + sorted(set(tokens) - set(ORDER_STAGES))
    result = topological_order(nodes, precedence_edges(pairs))
    verdicts = [{"A": r["A"], "B": r["B"], "winner": r["winner"]} for _, r in pairs.iterrows()] if len(pairs) else []
    record: dict[str, Any] = {"protocol": protocol.record(), "pairs": verdicts, "nodes": nodes,
                              "edges": precedence_edges(pairs), "cycles": result.cycles, "order": result.order,
                              "chains": {}}
    if result.order is not None:
        reverse = result.order[::-1]
        record["chains"] = {"sorted": chain_of(result.order, tokens), "reverse": chain_of(reverse, tokens),
                            "random": [chain_of(p, tokens) for p in random_orders(nodes, random_count, seed,
                                                                                   [result.order, reverse])]}
    return record


def insertion_checks(frame: pd.DataFrame, metric: str, pairs: pd.DataFrame,
                     protocol: Protocol = LEGACY) -> pd.DataFrame:
    """Chains A+X+B against B+X+A: does the pairwise winner of (A, B) still win with X inserted?"""
    rows = []
    triple = frame[frame["chain"].map(lambda c: len(names(c)) == 3 and len(set(names(c))) == 3)]
    for (dataset, model), panel in triple.groupby(["dataset", "model"], sort=False):
        base = base_point(frame[(frame["dataset"] == dataset) & (frame["model"] == model)], metric)
        stats = panel.groupby("chain").agg(mean=(metric, "mean"), bitops=("bitops", "mean"))
        for chain in stats.index:
            a, x, b = names(chain)
            other = next((c for c in stats.index if names(c) == (b, x, a)), None)
            if other is None or a > b:
                continue
            win, reason = judge_pair(seed_metric(panel, chain, metric), seed_metric(panel, other, metric),
                                     stats.loc[chain, "bitops"], stats.loc[other, "bitops"], base, protocol)
            pair = pairs[(pairs["dataset"] == dataset) & (pairs["model"] == model)
                         & (pairs["A"].isin([a, b])) & (pairs["B"].isin([a, b]))]
            pairwise = pair["winner"].iloc[0] if len(pair) else "n/a"
            first, second = (a, b) if win > 0 else (b, a)
            with_x = reason if win == 0 else f"{short([first])}->{short([second])}"
            rows.append({"dataset": dataset, "model": model, "chains": f"{short(chain)} vs {short(other)}",
                         "inserted": x, f"{metric}_first": stats.loc[chain, "mean"],
                         f"{metric}_second": stats.loc[other, "mean"], "winner_with_insert": with_x,
                         "pairwise_winner": pairwise,
                         "order_kept": None if reason in UNJUDGED else with_x == pairwise})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- figures
def chain_kinds(chains: Iterable[str], order: list[str] | None, methods: set[str]) -> dict[str, str]:
    """Label every full-length chain (each method once): sorted, its reverse, the paper's order (DPQE) and
    its reverse when they differ from those, else random."""
    paper = [n for n in ORDER_STAGES if n in methods]
    kinds = {}
    for chain in chains:
        seq = list(names(chain))
        if sorted(seq) != sorted(methods) or len(seq) != len(methods):
            continue
        if order is not None and seq == order:
            kinds[chain] = "sorted (from pairwise)"
        elif order is not None and seq == order[::-1]:
            kinds[chain] = "reverse of sorted"
        elif seq == paper:
            kinds[chain] = "paper order"
        elif seq == paper[::-1]:
            kinds[chain] = "reverse of paper order"
        else:
            kinds[chain] = "random"
    return kinds


def panel_order(panel: pd.DataFrame, metric: str, protocol: Protocol) -> tuple[pd.DataFrame, SortResult, set[str]]:
    pairs = pairwise_table(panel, metric, protocol)
    methods = set(pairs["A"]).union(pairs["B"]) if len(pairs) else set()
    nodes = [n for n in ORDER_STAGES if n in methods] + sorted(methods - set(ORDER_STAGES))
    return pairs, topological_order(nodes, precedence_edges(pairs)), methods


@table("order_pairwise")
def pairwise_all(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every pair of methods run in both orders, per (dataset, model): each order's mean metric and spread
    over seeds, BitOps and reduction, both metrics at matched cost, the winner and its margin."""
    protocol, metric = study_protocol(frame, metric)
    tables = [pairwise_table(panel, metric, protocol) for _, panel in frame.groupby(["dataset", "model"], sort=False)]
    pairs = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return pairs.drop(columns=["first", "second"], errors="ignore")


@figure("order_graph")
def draw_precedence(frame: pd.DataFrame, metric: str) -> Any:
    """The precedence graph per (dataset, model): an arrow A->B when A-then-B won, labelled with the accuracy
    margin in points; edges of a cycle red; pairs left without an edge (tie, incomparable, seeds disagree) dotted
    grey with the reason; the sorted order (or the cycle) in the title, ``|`` where consecutive methods have no
    edge and the order between them is only the sort's fixed fallback."""
    protocol, metric = study_protocol(frame, metric)
    plt = pyplot()
    panels = list(frame.groupby(["dataset", "model"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.4), squeeze=False)
    for ax, ((dataset, model), panel) in zip(axes[0], panels):
        pairs, result, methods = panel_order(panel, metric, protocol)
        graph = nx.DiGraph()
        graph.add_nodes_from(short([n]) for n in sorted(methods, key=lambda n: ORDER_STAGES.index(n)
                                                      if n in ORDER_STAGES else 99))
        labels = {}
        for _, row in pairs.dropna(subset=["first"]).iterrows() if len(pairs) else []:
            edge = (short([row["first"]]), short([row["second"]]))
            graph.add_edge(*edge)
            labels[edge] = f"+{100 * row['margin']:.1f}"
        cyclic = {(short([a]), short([b])) for c in result.cycles for a, b in zip(c, c[1:] + c[:1])}
        pos = nx.circular_layout(graph)
        nx.draw_networkx_nodes(graph, pos, ax=ax, node_color="#cfe3f7", node_size=900)
        nx.draw_networkx_labels(graph, pos, ax=ax, font_size=12)
        nx.draw_networkx_edges(graph, pos, ax=ax, arrowsize=18, node_size=900, connectionstyle="arc3,rad=0.08",
                               edge_color=["red" if e in cyclic else "black" for e in graph.edges])
        nx.draw_networkx_edge_labels(graph, pos, edge_labels=labels, ax=ax, font_size=8, label_pos=0.3)
        undecided = {(short([r["A"]]), short([r["B"]])): r["winner"]
                     for _, r in pairs[pairs["first"].isna()].iterrows()} if len(pairs) else {}
        if undecided:  # pairs the protocol left without an edge: dotted, with the reason
            nx.draw_networkx_edges(graph, pos, edgelist=list(undecided), ax=ax, arrows=False, style="dotted",
                                   edge_color="grey", node_size=900)
            nx.draw_networkx_edge_labels(graph, pos, edge_labels=undecided, ax=ax, font_size=7, font_color="grey")
        edges = set(graph.edges) - set(undecided)
        title = ("".join(f"{short([a])} {'->' if (short([a]), short([b])) in edges else '|'} "
                         for a, b in zip(result.order, result.order[1:])) + short([result.order[-1]])
                 if result.order else "no pair run in both orders" if result.order is not None
                 else "cycle: " + "; ".join("".join(short([n]) for n in c) for c in result.cycles))
        if result.order and "|" in title:
            title += "  (|: no edge, the sort's fixed order)"
        ax.set_title(f"{model} on {dataset}\n{title}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


@table("order_chains")
def chains_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every chain's mean metric and spread over seeds, drop from the uncompressed model in points and BitOps
    reduction, with its kind (sorted, reverse, paper order, random, pairwise, single) and whether it meets the
    target (>= 100x BitOps within 1 point)."""
    protocol, metric = study_protocol(frame, metric)
    data = with_reduction(frame)
    rows = []
    for (dataset, model), panel in data.groupby(["dataset", "model"], sort=False):
        _, result, methods = panel_order(panel, metric, protocol)
        kinds = chain_kinds(panel["chain"].unique(), result.order, methods)
        base = panel[panel["chain"] == BASE][metric].mean()
        for chain, group in panel.groupby("chain", sort=False):
            seq = names(chain)
            kind = kinds.get(chain) or ("base" if not seq else "repeated" if len(set(seq)) < len(seq)
                                        else "pairwise" if len(seq) == 2 else "single" if len(seq) == 1
                                        else "insertion/partial")
            drop = base - group[metric].mean()
            reduction = group["bitops_reduction"].mean()
            rows.append({"dataset": dataset, "model": model, "chain": short(chain), "kind": kind,
                         "seeds": group["seed"].nunique(), metric: group[metric].mean(),
                         f"{metric}_std": group[metric].std(), "drop_points": 100 * drop,
                         "bitops_reduction": reduction, "params": group["params"].mean(),
                         "model_bits": group["model_bits"].mean() if "model_bits" in group else math.nan,
                         "meets_target": bool(reduction >= TARGET_REDUCTION and drop <= TARGET_DROP),
                         "full_chain": chain})
    return pd.DataFrame(rows)


@table("order_insertion")
def insertion_all(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Insertion checks: chains A+X+B against B+X+A, and whether the pairwise winner of (A, B) still wins with
    X inserted between them."""
    protocol, metric = study_protocol(frame, metric)
    tables = [insertion_checks(panel, metric, panel_order(panel, metric, protocol)[0], protocol)
              for _, panel in frame.groupby(["dataset", "model"], sort=False)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def variant_labels(chains: Iterable[str]) -> dict[str, str]:
    """Each chain's order in letters; chains of the same order (the low-bit DPQE chains) also name the stage
    settings that tell them apart, e.g. ``DPQE (prune-0.7, qat-4)``."""
    calls = {chain: [str(call) for call in parse_chain(chain)] for chain in chains}
    groups: dict[str, list[str]] = {}
    for chain in calls:
        groups.setdefault(short(chain), []).append(chain)
    labels = {}
    for letters, members in groups.items():
        for chain in members:
            differing = [call for i, call in enumerate(calls[chain]) if any(calls[o][i] != call for o in members)]
            labels[chain] = f"{letters} ({', '.join(differing)})" if differing else letters
    return labels


@figure("order_tradeoff")
def draw_tradeoff(frame: pd.DataFrame, metric: str) -> Any:
    """Accuracy against BitOps reduction (log scale) along the prefixes of each full-length order: the sorted
    order, its reverse, the paper's order and random orders (error bars: standard deviation over seeds); the
    uncompressed model dashed, 1 point below it dotted."""
    protocol, metric = study_protocol(frame, metric)
    plt = pyplot()
    data = with_reduction(frame)
    panels = list(data.groupby(["dataset", "model"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    styles = {"sorted (from pairwise)": ("tab:green", "o"), "reverse of sorted": ("tab:red", "s"),
              "paper order": ("tab:blue", "D"), "reverse of paper order": ("tab:orange", "v"),
              "random": ("tab:gray", "^")}
    for ax, ((dataset, model), panel) in zip(axes[0], panels):
        pairs, result, methods = panel_order(panel, metric, protocol)
        kinds = chain_kinds(panel["chain"].unique(), result.order, methods)
        stats = panel.groupby("chain").agg(y=(metric, "mean"), yerr=(metric, "std"), x=("bitops_reduction", "mean"))
        labels = variant_labels(kinds)
        seen: dict[str, int] = {}  # variants of one order: the same colour, another line style each
        for chain, kind in sorted(kinds.items(), key=lambda kv: list(styles).index(kv[1])):
            prefixes = [format_chain(parse_chain(chain)[:i]) for i in range(len(names(chain)) + 1)]
            points = stats.loc[[p for p in prefixes if p in stats.index]]
            color, marker = styles[kind]
            variant = seen[short(chain)] = seen.get(short(chain), -1) + 1
            ax.errorbar(points["x"], 100 * points["y"], yerr=100 * points["yerr"].fillna(0), color=color,
                        marker=marker, lw=2 if kind.startswith("sorted") else 1, capsize=2,
                        ls=LINE_STYLES[variant % len(LINE_STYLES)], alpha=1.0 if kind != "random" else 0.6,
                        label=f"{labels[chain]}: {kind}")
        ax.axhline(100 * stats.loc[BASE, "y"], color="black", ls="--", lw=1, label="uncompressed")
        ax.axhline(100 * (stats.loc[BASE, "y"] - TARGET_DROP), color="black", ls=":", lw=1, label="-1 point")
        ax.axvline(TARGET_REDUCTION, color="purple", ls=":", lw=1, label="100x")
        ax.set_xscale("log")
        ax.set_xlabel("BitOps reduction (x, expected over the eval set)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{model} on {dataset}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def derived_chains(decision: dict[str, Any]) -> list[str]:
    """The full chains a decision asks for: sorted, reverse and random orders (none if the graph has a cycle)."""
    found = decision["chains"]
    return [found["sorted"], found["reverse"], *found["random"]] if decision["order"] else []


def decide_order(frame: pd.DataFrame, metric: str, chains: list[str], random_count: int | None, seed: int,
                 protocol: Protocol = LEGACY) -> dict[str, Any]:
    """The order checkpoint's decision for one (dataset, model) from the runs of its pairwise chains, under the
    study's protocol (``random_count``/``seed`` given on the command line override the protocol's)."""
    count = protocol.random_orders if random_count is None else random_count
    metric = protocol_metric(frame, metric, protocol)
    protocol = replace(protocol, metric=metric)  # the decision records the metric it compared
    return decide(pairwise_table(frame, metric, protocol), method_tokens(chains), count,
                  seed if random_count is not None else protocol.random_seed, protocol)


def pairwise_chains(chains: Iterable[str]) -> list[str]:
    return [c for c in chains if len(names(c)) == 2 and len(set(names(c))) == 2]


def order_deriver(protocol: Protocol) -> Deriver:
    """The ``order`` deriver deciding under ``protocol``; ``configure`` binds a study's own protocol."""

    def decide(frame: pd.DataFrame, metric: str, chains: list[str], count: int | None, seed: int) -> dict[str, Any]:
        return decide_order(frame, metric, chains, count, seed, protocol)

    return Deriver(inputs=pairwise_chains, decide=decide, chains=derived_chains, configure=bind)


def bind(study: dict[str, Any]) -> Deriver:
    """The deriver of a study's config: its protocol, whose seeds must be seeds the study runs."""
    protocol = Protocol.from_config(study.get("protocol"))
    extra = sorted(set(protocol.seeds or ()) - set(study.get("seeds", ())))
    if extra:
        raise ConfigError(f"protocol: seeds {extra} are not among the study's seeds {study.get('seeds')}. Fix: "
                          "decide on seeds the study runs.")
    return order_deriver(protocol)


DERIVERS.add("order", order_deriver(LEGACY))
