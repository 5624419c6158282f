"""Placement: topology from (fake) sysfs trees, the plan for every local rank, and real pinned runs under mpiexec."""
import os
from types import SimpleNamespace

import h5py
import pytest

from mpirunner.placement import (HostView, NumaNode, RankPlan, Topology, _host_plan, format_cpu_list,
                                 parse_cpu_list, plan_host, read_topology, respect_launcher_binding)
from tests.conftest import run_cli

# name -> cpulist of each NUMA node
TREES = {
    "1 node x 2 cpus": ["0-1"],
    "2 nodes x 4 cpus": ["0-3", "4-7"],
    "4 unequal nodes": ["0-5", "6-7", "8-10", "11"],
    "cpu lists with gaps": ["0-3,8-11", "4-7,12-15"],
}
LOCAL_SIZES = (1, 2, 3, 4, 8, 16)


def make_sysfs(root, cpulists, memory_kib=1048576):
    """A fake /sys with devices/system/node/node<i>/{cpulist,meminfo} (plus the files real trees have beside)."""
    node_root = root / "devices" / "system" / "node"
    node_root.mkdir(parents=True)
    (node_root / "online").write_text(f"0-{len(cpulists) - 1}\n")
    for index, cpulist in enumerate(cpulists):
        node = node_root / f"node{index}"
        node.mkdir()
        (node / "cpulist").write_text(cpulist + "\n")
        (node / "meminfo").write_text(f"Node {index} MemTotal:       {memory_kib} kB\n"
                                      f"Node {index} MemFree:        1024 kB\n")
    return root


def all_cpus(cpulists):
    return set().union(*(parse_cpu_list(text) for text in cpulists))


@pytest.mark.parametrize("text, cpus", [("0-3,8", (0, 1, 2, 3, 8)), ("0-3,8-11", (0, 1, 2, 3, 8, 9, 10, 11)),
                                        ("5", (5,)), ("", ()), ("0-6:2", (0, 2, 4, 6)), ("2,0-1\n", (0, 1, 2))])
def test_cpu_lists_parse_and_format_round_trip(text, cpus):
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


def test_format_is_compact():
    assert format_cpu_list([8, 0, 1, 2, 3]) == "0-3,8"
    assert format_cpu_list([0, 2, 4]) == "0,2,4"


def test_topology_reads_nodes_memory_and_keeps_only_allowed_cpus(tmp_path):
    root = make_sysfs(tmp_path, ["0-3,8-11", "4-7,12-15", ""], memory_kib=2048)
    topology = read_topology(allowed_cpus={0, 1, 9, 12}, sysfs_root=root)
    assert topology.from_sysfs
    assert [node.node for node in topology.nodes] == [0, 1]  # the memory-only node2 cannot host a rank
    assert topology.nodes[0].cpus == (0, 1, 9)
    assert topology.nodes[1].cpus == (12,)
    assert topology.nodes[0].memory_kib == 2048


def test_node_without_allowed_cpus_is_left_out(tmp_path):
    root = make_sysfs(tmp_path, ["0-3", "4-7"])
    topology = read_topology(allowed_cpus=range(4, 8), sysfs_root=root)
    assert [(node.node, node.cpus) for node in topology.nodes] == [(1, (4, 5, 6, 7))]


def test_no_numa_sysfs_is_one_node_of_all_allowed_cpus(tmp_path):
    topology = read_topology(allowed_cpus={3, 1, 2}, sysfs_root=tmp_path / "missing")
    assert not topology.from_sysfs
    assert topology.nodes == (NumaNode(0, (1, 2, 3)),)


@pytest.mark.parametrize("local_size", LOCAL_SIZES)
@pytest.mark.parametrize("tree", sorted(TREES))
def test_plan_over_fake_sysfs(tmp_path, tree, local_size):
    cpulists = TREES[tree]
    topology = read_topology(all_cpus(cpulists), sysfs_root=make_sysfs(tmp_path, cpulists))
    plans = plan_host(topology, local_size)
    node_ids = [node.node for node in topology.nodes]
    nodes = {node.node: node for node in topology.nodes}
    for rank, plan in enumerate(plans):
        assert plan.node == node_ids[rank % len(node_ids)], "ranks go round-robin over the nodes"
        assert plan.threads == len(plan.cpus)
        share = list(plan.cpus)
        node_cpus = list(nodes[plan.node].cpus)
        start = node_cpus.index(share[0])
        assert node_cpus[start:start + len(share)] == share, "a share is contiguous in its node's CPU list"
    for node_id in node_ids:
        members = [plan for plan in plans if plan.node == node_id]
        if not members:
            continue
        node_cpus = set(nodes[node_id].cpus)
        used = [cpu for plan in members for cpu in plan.cpus]
        assert set(used) == node_cpus, "every CPU of a node with ranks is used"
        if len(members) <= len(node_cpus):
            assert len(used) == len(set(used)), "shares are disjoint when the node has enough CPUs"
            assert not any(plan.shared for plan in members)
            sizes = [len(plan.cpus) for plan in members]
            assert max(sizes) - min(sizes) <= 1, "shares differ by at most one CPU"
        else:
            assert all(plan.shared and len(plan.cpus) == 1 for plan in members), "more ranks than CPUs: say so"
    if local_size >= len(node_ids):
        assert {cpu for plan in plans for cpu in plan.cpus} == all_cpus(cpulists)


def test_documented_examples():
    two_nodes = Topology((NumaNode(0, (0, 1, 2, 3)), NumaNode(1, (4, 5, 6, 7))))
    assert [(p.node, p.cpus) for p in plan_host(two_nodes, 3)] == [(0, (0, 1)), (1, (4, 5, 6, 7)), (0, (2, 3))]
    gaps = Topology((NumaNode(0, (0, 1, 2, 3, 8, 9, 10, 11)),))
    assert [p.cpus for p in plan_host(gaps, 3)] == [(0, 1, 2), (3, 8, 9), (10, 11)]


def test_cpus_per_rank_and_threads():
    two_nodes = Topology((NumaNode(0, (0, 1, 2, 3)), NumaNode(1, (4, 5, 6, 7))))
    assert [p.cpus for p in plan_host(two_nodes, 2, cpus_per_rank=1)] == [(0,), (4,)]
    one_node = Topology((NumaNode(0, (0, 1, 2, 3)),))
    wrapped = plan_host(one_node, 2, cpus_per_rank=3)
    assert [p.cpus for p in wrapped] == [(0, 1, 2), (3, 0, 1)] and all(p.shared for p in wrapped)
    assert [p.cpus for p in plan_host(one_node, 1, cpus_per_rank=9)] == [(0, 1, 2, 3)]  # no more than the node has
    assert [p.threads for p in plan_host(one_node, 2, threads=3)] == [3, 3]


def test_preferred_node_wins_over_round_robin():
    two_nodes = Topology((NumaNode(0, (0, 1, 2, 3)), NumaNode(1, (4, 5, 6, 7))))
    plans = plan_host(two_nodes, 3, preferred_nodes=[1, 1, None])
    assert [(p.node, p.cpus) for p in plans] == [(1, (4, 5)), (1, (6, 7)), (0, (0, 1, 2, 3))]
    unknown = plan_host(two_nodes, 1, preferred_nodes=[7])  # a node this rank may not use: ignored
    assert unknown[0].node == 0


def test_launcher_binding_narrower_than_the_share_is_kept():
    topology = Topology((NumaNode(0, (0, 1, 2, 3)), NumaNode(1, (4, 5, 6, 7))))
    share = RankPlan(0, (0, 1, 2, 3), 4)
    kept = respect_launcher_binding(share, (2,), topology)
    assert (kept.node, kept.cpus, kept.threads, kept.kept_launcher_binding) == (0, (2,), 1, True)
    assert respect_launcher_binding(share, (0, 1, 2, 3, 4, 5), topology) == share


def test_ranks_bound_by_a_launcher_stay_on_its_nodes(tmp_path):
    """poprun --numa-aware=yes may put instance 0 on node 1: the plan follows the launcher's node choice."""
    root = make_sysfs(tmp_path, ["0-3", "4-7"])
    config = SimpleNamespace(cpus_per_rank=None, threads=None)
    views = [HostView("h", 0, (4, 5, 6, 7), None), HostView("h", 1, (0, 1, 2, 3), None),
             HostView("other", 0, (0,), None)]
    topology, plan, bound = _host_plan(config, views[0], views, root)
    assert bound and plan.node == 1 and plan.cpus == (4, 5, 6, 7)
    _, plan, _ = _host_plan(config, views[1], views, root)
    assert plan.node == 0 and plan.cpus == (0, 1, 2, 3)
    _, plan, bound = _host_plan(config, views[2], views, root)  # alone on its host: not bound
    assert not bound and plan.cpus == (0,)


# ---------------------------------------------------------------- real runs

def read_ranks(path):
    with h5py.File(path) as h5:
        table = h5["ranks"][()]
        attrs = dict(h5.attrs)
    rows = [{name: (value.decode() if isinstance(value, bytes) else value)
             for name, value in zip(table.dtype.names, row)} for row in table]
    return sorted(rows, key=lambda row: row["rank"]), attrs


def test_two_ranks_are_pinned_to_different_cpus(tmp_path, tiny_args):
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs 2 CPUs")
    output = tmp_path / "pinned.h5"
    result = run_cli([*tiny_args, "--iterations", "2", "--output", output], ranks=2)
    assert result.returncode == 0, result.stderr
    assert "placement (--numa-aware yes)" in result.stderr
    rows, _ = read_ranks(output)
    pinned = [set(parse_cpu_list(row["cpus"])) for row in rows]
    assert not pinned[0] & pinned[1], "two ranks on one host get disjoint CPUs"
    assert pinned[0] | pinned[1] == allowed, "every CPU used"
    for row, cpus in zip(rows, pinned):
        assert parse_cpu_list(row["cpus_allowed"]) == tuple(sorted(cpus)), "recorded == what the kernel told the rank"
        assert row["threads"] == len(cpus)
        assert row["launcher_binding"] == "no" and row["cpus_shared"] == "no"
        assert row["mem_policy"] in ("none", f"preferred:{row['numa_node']}")
        assert set(parse_cpu_list(row["cpus_at_start"])) == allowed


def test_numa_aware_no_leaves_affinity_untouched(tmp_path, tiny_args):
    output = tmp_path / "unpinned.h5"
    result = run_cli([*tiny_args, "--iterations", "2", "--output", output, "--numa-aware", "no", "--threads", "1"],
                     ranks=2, env={"SLURM_JOB_ID": "4242"})
    assert result.returncode == 0, result.stderr
    rows, attrs = read_ranks(output)
    allowed = format_cpu_list(os.sched_getaffinity(0))
    for row in rows:
        assert row["cpus"] == row["cpus_at_start"] == row["cpus_allowed"] == allowed
        assert row["mem_policy"] == "none"
        assert row["threads"] == 1  # --threads still applies
    assert attrs["slurm_job_id"] == "4242"
    assert attrs["launcher"] != "none"
