"""Owns the tests of sagellmd/gpu/node_view.py, node_placement.py, node_spread.py and
node_group_placement.py: placement with a node dimension (issue 17, docs/multi-node.md)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sagellmd.gpu.group_placement import GroupStart
from sagellmd.gpu.node_group_placement import place_group_on_nodes
from sagellmd.gpu.node_placement import place_on_nodes, spans_nodes
from sagellmd.gpu.node_view import (
    EngineNeed,
    NodePlaced,
    NodeReservation,
    NodeShare,
    NodeView,
    SpreadPlaced,
    gpu_room,
)
from sagellmd.gpu.placement import GIB, GpuCapacity, NotPlaced

H = 0.95


def node(name: str, *sizes_gib: float, down: str = "", foreign_gib: float = 0) -> NodeView:
    gpus = tuple(
        GpuCapacity(i, int(size * GIB), int(foreign_gib * GIB)) for i, size in enumerate(sizes_gib)
    )
    return NodeView(name, gpus, down)


def need(gib: float, tp: int = 1, pp: int = 1, nodes: int | None = None) -> EngineNeed:
    return EngineNeed("m.e", int(gib * GIB), tp, pp, nodes)


def held(engine: str, on: str, gpus: tuple[int, ...], gib: float, whole=False):
    return NodeReservation(engine, on, gpus, int(gib * GIB), whole)


# -- one node ------------------------------------------------------------------------------


def test_an_engine_that_fits_on_one_node_goes_to_the_fullest_that_still_fits():
    nodes = [node("a", 80, 80), node("b", 80, 80), node("c", 80, 80)]
    taken = [held("x", "b", (0,), 50), held("y", "c", (0,), 70)]
    placed = place_on_nodes(need(20), nodes, taken, H)
    assert placed == NodePlaced("b", (0,), int(20 * GIB))


def test_best_fit_scores_the_chosen_gpus_room_across_nodes_like_across_gpus():
    # a's GPU1 has 20 GiB left, b's best has 30: a wins though b is fuller overall.
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    taken = [held("x", "a", (1,), 56), held("y", "b", (0,), 46), held("z", "b", (1,), 46)]
    placed = place_on_nodes(need(10), nodes, taken, H)
    assert isinstance(placed, NodePlaced) and (placed.node, placed.gpus) == ("a", (1,))


def test_a_multi_gpu_engine_takes_all_its_gpus_on_one_node():
    nodes = [node("a", 80), node("b", 80, 80)]
    placed = place_on_nodes(need(20, tp=2), nodes, [], H)
    assert placed == NodePlaced("b", (0, 1), int(20 * GIB))


def test_the_same_gpu_index_on_two_nodes_is_two_gpus():
    nodes = [node("a", 24), node("b", 24)]
    taken = [held("x", "a", (0,), 20)]
    placed = place_on_nodes(need(20), nodes, taken, H)
    assert isinstance(placed, NodePlaced) and placed.node == "b"


def test_dead_nodes_take_nothing_and_the_reason_names_every_node():
    nodes = [node("node-a", 24, 24), node("node-b", 80, 80, down="dead")]
    taken = [held("x", "node-a", (0,), 17.8), held("y", "node-a", (1,), 19.8)]
    outcome = place_on_nodes(need(20, tp=2), nodes, taken, H)
    assert outcome == NotPlaced(
        "needs 2 GPUs x 20.0 GiB; node-a: GPU0 5.0 GiB free, GPU1 3.0 GiB free; node-b: dead"
    )


def test_a_node_without_gpus_and_an_empty_cluster_are_said():
    outcome = place_on_nodes(need(1), [node("a"), node("b", 8, down="dead since 12:04:10")], [], H)
    assert isinstance(outcome, NotPlaced)
    assert outcome.message == "needs 1 GPU x 1.0 GiB; a: no GPUs; b: dead since 12:04:10"
    empty = place_on_nodes(need(1), [], [], H)
    assert isinstance(empty, NotPlaced) and empty.message.endswith("no nodes in the cluster")


def test_a_fit_only_on_a_gpu_where_an_engine_starts_waits_naming_node_and_gpu():
    nodes = [node("a", 80), node("b", 24)]
    outcome = place_on_nodes(need(40), nodes, [], H, busy={"a": (0,)})
    assert outcome == NotPlaced(
        "needs 1 GPU x 40.0 GiB; waiting for the engine starting on a GPU0", busy=True
    )
    # Another node that fits is used rather than waiting.
    placed = place_on_nodes(need(20), nodes, [], H, busy={"a": (0,)})
    assert isinstance(placed, NodePlaced) and placed.node == "b"


def test_a_gpu_held_whole_by_a_multi_node_engine_takes_no_other_engine():
    nodes = [node("a", 80, 80)]
    taken = [held("big", "a", (0,), 10, whole=True)]
    placed = place_on_nodes(need(10), nodes, taken, H)
    assert isinstance(placed, NodePlaced) and placed.gpus == (1,)
    outcome = place_on_nodes(need(10, tp=2), nodes, taken, H)
    assert isinstance(outcome, NotPlaced)
    assert "GPU0 held whole by big" in outcome.message


def test_nodes_1_keeps_an_engine_on_one_node_even_if_it_fits_on_none():
    assert not spans_nodes(need(10, tp=2, pp=2, nodes=1), [node("a", 80, 80)])
    outcome = place_on_nodes(need(10, tp=2, pp=2, nodes=1), [node("a", 80, 80)], [], H)
    assert isinstance(outcome, NotPlaced) and outcome.message.startswith("needs 4 GPUs")


def test_an_engine_that_fits_one_node_waits_there_rather_than_spreading():
    # b has 4 GPUs, all taken; a, c have 2 each free. tp*pp = 4 fits b's count: one node.
    nodes = [node("a", 80, 80), node("b", 80, 80, 80, 80), node("c", 80, 80)]
    taken = [held("x", "b", (0, 1, 2, 3), 70)]
    assert not spans_nodes(need(10, tp=2, pp=2), nodes)
    outcome = place_on_nodes(need(10, tp=2, pp=2), nodes, taken, H)
    assert isinstance(outcome, NotPlaced) and outcome.message.startswith("needs 4 GPUs")


# -- across nodes --------------------------------------------------------------------------


def test_more_gpus_than_any_node_spreads_pipeline_stages_one_node_each():
    nodes = [node("a", 80, 80), node("b", 80, 80), node("c", 80, 80)]
    taken = [held("x", "c", (0,), 5)]
    placed = place_on_nodes(need(30, tp=2, pp=2), nodes, taken, H)
    assert placed == SpreadPlaced(
        (NodeShare("a", (0, 1)), NodeShare("b", (0, 1))), int(30 * GIB), 2, 2
    )
    assert placed.stages_per_node == 1
    assert placed.bundle_nodes == ("a", "a", "b", "b")
    assert placed.placement_group() == {
        "bundles": [{"GPU": 1}] * 4,
        "strategy": "PACK",
        "bundle_label_selector": [{"sagellm.node": n} for n in ("a", "a", "b", "b")],
    }
    assert all(r.whole for r in placed.reservations("m.e"))
    assert {r.node for r in placed.reservations("m.e")} == {"a", "b"}


def test_one_gpu_per_node_is_a_strict_spread_group():
    nodes = [node("a", 24), node("b", 24)]
    placed = place_on_nodes(need(10, tp=1, pp=2), nodes, [], H)
    assert isinstance(placed, SpreadPlaced)
    group = placed.placement_group()
    assert group["strategy"] == "STRICT_SPREAD"
    assert group["bundle_label_selector"] == [{"sagellm.node": "a"}, {"sagellm.node": "b"}]


def test_nodes_n_spreads_even_when_one_node_could_hold_it():
    nodes = [node("a", 80, 80, 80, 80), node("b", 80, 80, 80, 80)]
    placed = place_on_nodes(need(10, tp=2, pp=2, nodes=2), nodes, [], H)
    assert isinstance(placed, SpreadPlaced)
    assert [(s.node, len(s.gpus)) for s in placed.shares] == [("a", 2), ("b", 2)]


def test_two_stages_per_node_when_pp_is_twice_the_nodes():
    nodes = [node("a", 80, 80, 80, 80), node("b", 80, 80, 80, 80)]
    placed = place_on_nodes(need(10, tp=2, pp=4, nodes=2), nodes, [], H)
    assert isinstance(placed, SpreadPlaced) and placed.stages_per_node == 2
    assert all(len(share.gpus) == 4 for share in placed.shares)


def test_the_fewest_nodes_are_used_when_the_engine_names_no_count():
    nodes = [node(n, 80, 80, 80, 80) for n in ("a", "b", "c", "d")]
    placed = place_on_nodes(need(10, tp=2, pp=4), nodes[:1] + nodes[1:], [], H)
    # 8 GPUs on nodes of 4: two nodes, not four.
    assert isinstance(placed, SpreadPlaced) and len(placed.shares) == 2


def test_only_wholly_free_gpus_count_and_the_fullest_nodes_are_chosen():
    nodes = [node("a", 80, 80, 80), node("b", 80, 80), node("c", 80, 80)]
    # a GPU holding any reservation is not free for a multi-node engine.
    taken = [held("x", "c", (0,), 1)]
    placed = place_on_nodes(need(10, tp=1, pp=2, nodes=2), nodes, taken, H)
    assert isinstance(placed, SpreadPlaced)
    # c has 1 free GPU (fullest), b 2: c and b; a (3 free) stays free for large engines.
    assert [s.node for s in placed.shares] == ["c", "b"] and placed.shares[0].gpus == (1,)


def test_multi_node_reasons_name_the_nodes():
    nodes = [node("box2", 80, 80, 80, 80), node("box3", 80, 80, 80, 80, down="dead since 12:04")]
    taken = [held("x", "box2", (0, 1), 10)]
    outcome = place_on_nodes(need(70, tp=4, pp=2), nodes, taken, H)
    assert outcome == NotPlaced(
        "needs 2 nodes x 4 GPUs x 70.0 GiB; box2: 2 of 4 GPUs free; box3: dead since 12:04"
    )


def test_nodes_n_beyond_the_alive_nodes_and_a_pp_it_does_not_divide():
    nodes = [node("a", 80, 80), node("b", 80, 80, down="dead")]
    outcome = place_on_nodes(need(10, tp=1, pp=3, nodes=3), nodes, [], H)
    assert outcome == NotPlaced("nodes: 3 but the cluster has 1 alive node; b: dead")
    outcome = place_on_nodes(need(10, tp=2, pp=3, nodes=2), nodes, [], H)
    assert isinstance(outcome, NotPlaced) and outcome.message.startswith(
        "nodes: 2 needs pipeline_parallel (3) to be a multiple of it"
    )


def test_tensor_parallel_larger_than_every_node_is_refused_with_the_rule():
    outcome = place_on_nodes(need(10, tp=4), [node("a", 80, 80), node("b", 80, 80)], [], H)
    assert outcome == NotPlaced(
        "tensor_parallel 4 exceeds the GPUs of every node (at most 2):"
        " tensor parallel stays within a node"
    )


def test_a_pipeline_split_needing_more_nodes_than_alive_names_the_count():
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    outcome = place_on_nodes(need(10, tp=2, pp=3), nodes, [], H)
    # 3 stages of 2 GPUs: only 3 nodes hold it, one stage each.
    assert outcome == NotPlaced(
        "needs 3 nodes x 2 GPUs x 10.0 GiB; a: 2 of 2 GPUs free; b: 2 of 2 GPUs free"
    )
    # pp 3 over 3 nodes of 2 GPUs does split.
    placed = place_on_nodes(need(10, tp=2, pp=3), [*nodes, node("c", 80, 80)], [], H)
    assert isinstance(placed, SpreadPlaced) and len(placed.shares) == 3


def test_too_few_free_gpus_across_nodes_counts_them_per_node():
    nodes = [node("box2", 80, 80), node("box3", 80, 80)]
    taken = [held("x", "box3", (1,), 10)]
    outcome = place_on_nodes(need(70, tp=2, pp=2), nodes, taken, H)
    assert outcome == NotPlaced(
        "needs 2 nodes x 2 GPUs x 70.0 GiB; box2: 2 of 2 GPUs free; box3: 1 of 2 GPUs free"
    )


def test_a_multi_node_fit_on_a_starting_gpu_waits():
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    outcome = place_on_nodes(need(10, tp=2, pp=2), nodes, [], H, busy={"b": (1,)})
    assert isinstance(outcome, NotPlaced) and outcome.busy
    assert outcome.message.endswith("waiting for the engine starting on b GPU1")


def test_gpus_of_one_size_are_preferred_across_nodes():
    nodes = [node("a", 24, 80), node("b", 80), node("c", 24)]
    placed = place_on_nodes(need(10, tp=1, pp=2, nodes=2), nodes, [], H)
    assert isinstance(placed, SpreadPlaced)
    # 24 GiB GPUs on a and c (least room, one size) rather than mixing with an 80.
    assert {(s.node, s.gpus) for s in placed.shares} == {("a", (0,)), ("c", (0,))}
    assert placed.per_gpu_bytes == int(10 * GIB)


def test_mixed_sizes_across_nodes_reserve_what_one_fraction_takes_on_the_larger():
    nodes = [node("a", 24), node("b", 80)]
    placed = place_on_nodes(need(5, tp=1, pp=2), nodes, [], H)
    assert isinstance(placed, SpreadPlaced)
    assert placed.per_gpu_bytes == -(-int(5 * GIB) * 80 // 24)
    # 10 GiB would make the 80 GiB worker's fraction take 33.3 GiB of the 24 GiB GPU.
    outcome = place_on_nodes(need(10, tp=1, pp=2), nodes, [], H)
    assert outcome == NotPlaced(
        "needs 2 nodes x 1 GPU x 10.0 GiB; a: 1 of 1 GPUs free; b: 1 of 1 GPUs free"
    )


# -- prefill/decode sets -------------------------------------------------------------------

PREFILL, DECODE = "p.chat.prefill-0", "p.chat.decode-0"


def pd(*members: tuple[str, int, float]) -> list[GroupStart]:
    return [GroupStart(engine_id, count, int(gib * GIB)) for engine_id, count, gib in members]


def test_a_set_stays_on_one_node_when_one_holds_it():
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    taken = [held("x", "a", (0,), 30)]
    placed = place_group_on_nodes("p.chat", pd((PREFILL, 1, 10), (DECODE, 1, 10)), nodes, taken, H)
    assert isinstance(placed, dict)
    assert {p.node for p in placed.values()} == {"a"}
    assert placed[PREFILL].gpus != placed[DECODE].gpus


def test_a_set_no_node_holds_spreads_without_sharing_a_gpu():
    nodes = [node("a", 80), node("b", 80)]
    placed = place_group_on_nodes("p.chat", pd((PREFILL, 1, 10), (DECODE, 1, 60)), nodes, [], H)
    assert isinstance(placed, dict)
    assert {(p.node, p.gpus) for p in placed.values()} == {("a", (0,)), ("b", (0,))}


def test_spread_nodes_puts_instances_on_different_nodes():
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    placed = place_group_on_nodes(
        "p.chat", pd((PREFILL, 1, 10), (DECODE, 1, 10)), nodes, [], H, spread=True
    )
    assert isinstance(placed, dict)
    assert {p.node for p in placed.values()} == {"a", "b"}


def test_a_restarting_instance_never_takes_the_gpu_its_partner_keeps_on_that_node():
    nodes = [node("a", 80), node("b", 80, 80)]
    partner = {DECODE: ("a", (0,))}
    taken = [held(DECODE, "a", (0,), 10)]
    placed = place_group_on_nodes("p.chat", pd((PREFILL, 1, 10)), nodes, taken, H, held=partner)
    assert isinstance(placed, dict)
    # a's only GPU is the partner's: the prefill goes to b, whatever room a has.
    assert placed[PREFILL].node == "b"


def test_a_set_that_fits_nowhere_is_one_reason_naming_the_instance_and_nodes():
    nodes = [node("a", 24), node("b", 24, down="dead")]
    outcome = place_group_on_nodes("p.chat", pd((PREFILL, 1, 10), (DECODE, 1, 10)), nodes, [], H)
    assert isinstance(outcome, NotPlaced) and not outcome.busy
    assert outcome.message.startswith(
        "p.chat (prefill and decode instances never share a GPU) waits as one unit: p.chat."
    )
    assert "b: dead" in outcome.message and "used by the set's other instances" in outcome.message


def test_a_set_that_fits_together_once_a_start_ends_waits():
    nodes = [node("a", 80, 80), node("b", 24)]
    outcome = place_group_on_nodes(
        "p.chat", pd((PREFILL, 1, 40), (DECODE, 1, 40)), nodes, [], H, busy={"a": (1,)}
    )
    assert isinstance(outcome, NotPlaced) and outcome.busy


# -- property: never over headroom on any GPU of any node ----------------------------------


@st.composite
def clusters(draw):
    names = ["a", "b", "c"][: draw(st.integers(1, 3))]
    nodes = []
    for name in names:
        sizes = draw(st.lists(st.sampled_from([24, 48, 80]), min_size=0, max_size=4))
        gpus = tuple(
            GpuCapacity(i, size * GIB, draw(st.integers(0, size * GIB // 4)))
            for i, size in enumerate(sizes)
        )
        nodes.append(NodeView(name, gpus, draw(st.sampled_from(["", "", "", "dead"]))))
    engines = draw(
        st.lists(
            st.tuples(
                st.integers(1, 60),
                st.sampled_from([1, 2, 4]),
                st.sampled_from([1, 2, 3, 4]),
                st.sampled_from([None, None, 1, 2, 3]),
                st.booleans(),
            ),
            max_size=12,
        )
    )
    return nodes, draw(st.floats(0.5, 1.0)), engines


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_no_gpu_of_any_node_is_ever_over_its_headroom(cluster):
    nodes, headroom, engines = cluster
    by_name = {n.name: n for n in nodes}
    reservations: list[NodeReservation] = []
    for number, (gib, tp, pp, count, as_set) in enumerate(engines):
        if as_set:
            outcome = place_group_on_nodes(
                f"g{number}",
                pd((f"g{number}.p", tp, gib), (f"g{number}.d", 1, gib)),
                nodes,
                reservations,
                headroom,
            )
            if isinstance(outcome, dict):
                spots = [(p.node, g) for p in outcome.values() for g in p.gpus]
                assert len(spots) == len(set(spots)), "two instances of a set share a GPU"
                for engine_id, placed in outcome.items():
                    reservations.extend(placed.reservations(engine_id))
        else:
            placed = place_on_nodes(
                EngineNeed(f"e{number}", gib * GIB, tp, pp, count), nodes, reservations, headroom
            )
            if isinstance(placed, NotPlaced):
                continue
            assert all(by_name[r.node].usable for r in placed.reservations("e"))
            assert sum(len(r.gpus) for r in placed.reservations("e")) == tp * pp
            if isinstance(placed, SpreadPlaced):
                assert len({share.node for share in placed.shares}) == len(placed.shares)
                assert pp % len(placed.shares) == 0
            reservations.extend(placed.reservations(f"e{number}"))
        for view in nodes:
            on_node = [r for r in reservations if r.node == view.name]
            for index, left in gpu_room(view, on_node, headroom).items():
                holders = [r for r in on_node if index in r.gpus]
                assert not holders or left >= 0, f"{view.name} GPU{index} over headroom"
                if any(r.whole for r in holders):
                    assert len(holders) == 1, f"{view.name} GPU{index} held whole and shared"


def test_spread_nodes_shares_a_node_only_when_no_other_has_room():
    nodes = [node("a", 80, 80), node("b", 24)]
    placed = place_group_on_nodes(
        "p.chat", pd((PREFILL, 1, 40), (DECODE, 1, 40)), nodes, [], H, spread=True
    )
    assert isinstance(placed, dict)
    assert {p.node for p in placed.values()} == {"a"}
    assert placed[PREFILL].gpus != placed[DECODE].gpus


def test_a_restarting_instance_joins_its_partner_on_that_node_when_it_fits():
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    partner = {DECODE: ("b", (1,))}
    taken = [held(DECODE, "b", (1,), 40), held("x", "a", (0,), 60)]
    # a's GPU0 is the best fit by room, but the set stays together on b.
    placed = place_group_on_nodes("p.chat", pd((PREFILL, 1, 10)), nodes, taken, H, held=partner)
    assert isinstance(placed, dict) and placed[PREFILL] == NodePlaced("b", (0,), int(10 * GIB))


def test_a_partner_on_a_dead_node_leaves_the_instance_free_to_go_elsewhere():
    nodes = [node("a", 80), node("b", 80, down="dead")]
    partner = {DECODE: ("b", (0,))}
    placed = place_group_on_nodes("p.chat", pd((PREFILL, 1, 10)), nodes, [], H, held=partner)
    assert isinstance(placed, dict) and placed[PREFILL].node == "a"


def test_whole_held_gpus_are_skipped_by_a_set_on_one_node():
    nodes = [node("a", 80, 80, 80)]
    taken = [held("big", "a", (0, 1), 10, whole=True)]
    outcome = place_group_on_nodes("p.chat", pd((PREFILL, 1, 1), (DECODE, 1, 1)), nodes, taken, H)
    assert isinstance(outcome, NotPlaced)
    assert "GPU0 held whole by big, GPU1 held whole by big" in outcome.message


def test_a_multi_node_engine_skips_gpus_shared_by_memory_and_fails_with_counts():
    nodes = [node("a", 80, 80), node("b", 80, 80)]
    taken = [held("x", "a", (0,), 1), held("y", "b", (1,), 1)]
    outcome = place_on_nodes(need(1, tp=2, pp=2), nodes, taken, H)
    assert outcome == NotPlaced(
        "needs 2 nodes x 2 GPUs x 1.0 GiB; a: 1 of 2 GPUs free; b: 1 of 2 GPUs free"
    )
    # With one GPU per node (nodes: 2) it fits on the free ones.
    placed = place_on_nodes(need(1, tp=1, pp=2, nodes=2), nodes, taken, H)
    assert isinstance(placed, SpreadPlaced)
    assert {(s.node, s.gpus) for s in placed.shares} == {("a", (1,)), ("b", (0,))}


def test_foreign_memory_counts_against_a_gpu_on_every_node():
    nodes = [node("a", 24, foreign_gib=10), node("b", 24)]
    placed = place_on_nodes(need(15), nodes, [], H)
    assert isinstance(placed, NodePlaced) and placed.node == "b"
    outcome = place_on_nodes(need(23), nodes, [], H)
    assert outcome == NotPlaced(
        "needs 1 GPU x 23.0 GiB; a: GPU0 12.8 GiB free; b: GPU0 22.8 GiB free"
    )
