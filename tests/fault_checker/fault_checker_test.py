#!/usr/bin/env python3
"""Unit tests of the fault checker's pure parts (no engine needed):
schedules are a function of the seed alone, the controller adapter, parsing."""

import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import campaign  # noqa: E402
import fault_checker  # noqa: E402
from cluster import Ctl, TargetView, parse_fields  # noqa: E402


def describe(steps):
    return [(s.kinds, s.describe(), [(e.t, e.action, sorted(e.args.items())) for e in s.events],
             s.tail_s) for s in steps]


class PlanTest(unittest.TestCase):
    def test_same_seed_same_schedule(self):
        p1, s1 = campaign.plan_seed(7, 12, campaign.KINDS, 0.3)
        p2, s2 = campaign.plan_seed(7, 12, campaign.KINDS, 0.3)
        self.assertEqual(p1, p2)
        self.assertEqual(describe(s1), describe(s2))

    def test_other_seed_other_schedule(self):
        _, s1 = campaign.plan_seed(1, 12, campaign.KINDS, 0.3)
        _, s2 = campaign.plan_seed(2, 12, campaign.KINDS, 0.3)
        self.assertNotEqual(describe(s1), describe(s2))

    def test_fault_budget_and_every_kind_once_per_round(self):
        for seed in range(1, 30):
            _, steps = campaign.plan_seed(seed, 6, campaign.KINDS, 0.0)
            self.assertEqual(sorted(k for s in steps for k in s.kinds), sorted(campaign.KINDS))
            _, steps = campaign.plan_seed(seed, 9, campaign.KINDS, 0.5)
            self.assertEqual(len(steps), 9)  # one step per fault; overlapping ones are extra
            self.assertTrue(set(campaign.KINDS) <= {s.kinds[0] for s in steps})
            for s in steps:
                self.assertEqual([e.t for e in s.events], sorted(e.t for e in s.events))
                if len(s.kinds) == 2:  # the overlapping fault hits another replica
                    victims = {e.args.get("i", e.args.get("x")) for e in s.events} - {None}
                    has_victim = s.kinds[0] not in ("target_kill", "restart_all")
                    self.assertEqual(len(victims), 2 if has_victim else 1, s.describe())

    def test_colocated_plan_follows_the_target(self):
        """Colocated: replica kills and overlapping faults spare the target's
        engine; target kills kill it (and restart it after the re-attach)."""
        for seed in range(1, 40):
            p, steps = campaign.plan_seed(seed, 12, campaign.KINDS, 0.5, colocated=True)
            self.assertEqual(p, campaign.plan_seed(seed, 12, campaign.KINDS, 0.5, True)[0])
            self.assertTrue(set(campaign.KINDS) <= {s.kinds[0] for s in steps})
            tgt = int(p["first_target"][1:])
            for s in steps:
                self.assertEqual(s.target, tgt, s.describe())
                ev = {e.action: e for e in s.events}
                kills = [e.args["i"] for e in s.events if e.action == "kill_replica"]
                if s.kinds[0] == "target_kill":
                    self.assertEqual(kills[0], tgt)
                    self.assertNotEqual(ev["reattach"].args["engine"], f"e{tgt}")
                    self.assertLess(ev["reattach"].t, [e.t for e in s.events
                                                      if e.action == "restart_replica" and e.args["i"] == tgt][0])
                    tgt = int(ev["reattach"].args["engine"][1:])
                elif s.kinds[0] == "partition":
                    tgt = int(ev["partition"].args["engine"][1:])
                    self.assertNotEqual(tgt, ev["partition"].args["x"])
                elif s.kinds[0] == "restart_all":
                    tgt = int(ev["restart_all"].args["engine"][1:])
                else:
                    self.assertNotIn(s.target, kills, s.describe())
                if len(s.kinds) == 2:
                    self.assertNotIn(s.overlap_victim, (s.target, tgt), s.describe())

    def test_kinds_filter(self):
        _, steps = campaign.plan_seed(3, 5, ["partition"], 0.0)
        self.assertEqual([s.kinds for s in steps], [["partition"]] * 5)


class TargetViewTest(unittest.TestCase):
    GET = """volume_id=v
nbd_socket=/x/v.sock
epoch=3
state=DEGRADED
generation=7
generation_id=00000000deadbeef
replica.0.address=127.0.0.1:1
replica.0.replica_id=v-r0
replica.0.state=HEALTHY
replica.0.generation=7
replica.0.generation_id=00000000deadbeef
replica.1.address=127.0.0.1:2
replica.1.replica_id=v-r1
replica.1.state=FAULTED
replica.1.generation=6
replica.1.generation_id=0000000000000001
replica.2.address=127.0.0.1:3
replica.2.replica_id=v-r2
replica.2.state=HEALTHY
replica.2.generation=7
replica.2.generation_id=00000000deadbeef
rebuild.state=IDLE
rebuilds_completed=2
"""

    def test_parse_and_in_sync(self):
        v = TargetView(parse_fields(self.GET))
        self.assertEqual(v.state, "DEGRADED")
        self.assertTrue(v.serving())
        self.assertEqual(v.epoch, 3)
        self.assertEqual(len(v.replicas), 3)
        self.assertEqual(v.rebuilds_completed, 2)
        self.assertEqual(v.in_sync(), ("00000000deadbeef", ["v-r0", "v-r2"]))

    def test_no_generation_ids_no_in_sync_set(self):
        text = "\n".join(l for l in self.GET.splitlines() if "generation_id" not in l)
        self.assertIsNone(TargetView(parse_fields(text)).in_sync())
        zero = self.GET.replace("generation_id=00000000deadbeef", "generation_id=0000000000000000")
        self.assertIsNone(TargetView(parse_fields(zero)).in_sync())

    def test_the_targets_own_in_sync_record_wins(self):
        v = TargetView(parse_fields(self.GET + "in_sync=v-r2\n"))
        self.assertEqual(v.in_sync(), ("00000000deadbeef", ["v-r2"]))


class CtlAdapterTest(unittest.TestCase):
    def args(self, mode, in_sync):
        return Ctl("/nonexistent/tandemctl", mode).target_create_args(
            "v", 4, ["127.0.0.1:1", "127.0.0.1:2"], "256M", 2000, 200, "16M", in_sync)

    def test_in_sync_flags_only_when_supported_and_known(self):
        ins = ("00000000deadbeef", ["v-r0", "v-r2"])
        on = self.args("on", ins)
        self.assertIn("--in-sync-generation-id=00000000deadbeef", on)
        self.assertEqual([a for a in on if a.startswith("--in-sync-replica=")],
                         ["--in-sync-replica=v-r0", "--in-sync-replica=v-r2"])
        self.assertFalse([a for a in self.args("off", ins) if "in-sync" in a])
        self.assertFalse([a for a in self.args("on", None) if "in-sync" in a])
        self.assertIn("--epoch=4", on)
        self.assertEqual([a for a in on if a.startswith("--replica=")],
                         ["--replica=127.0.0.1:1", "--replica=127.0.0.1:2"])


class StampTest(unittest.TestCase):
    def test_stamp_seq(self):
        block = bytearray(4096)
        self.assertEqual(campaign.stamp_seq(bytes(block)), "zero")
        block[0:8] = campaign.STAMP_MAGIC.to_bytes(8, "little")
        block[16:24] = ((3 << 40) + 17).to_bytes(8, "little")
        self.assertEqual(campaign.stamp_seq(bytes(block)), "3.17")
        block[0] ^= 1
        self.assertEqual(campaign.stamp_seq(bytes(block)), "garbage")


class TableTest(unittest.TestCase):
    def test_table_counts_failures(self):
        import collections
        ok = {"faults": collections.Counter(replica_kill=2), "acked": 10, "failed": 1, "lost": 0,
              "divergent": 0, "fenced": 0, "rebuilds": 2, "degraded_s": 1.5, "seconds": 20,
              "result": "ok", "notes": []}
        bad = dict(ok, lost=3, result="FAIL step 2 [pa]: lost=3", failed_kinds=["partition"])
        out = io.StringIO()
        self.assertEqual(fault_checker.print_table([(1, ok), (2, bad)], out), 1)
        text = out.getvalue()
        self.assertIn("1 of 2 seeds FAILED", text)
        self.assertRegex(text, r"partition\s+0\s+1 \(2\)")


if __name__ == "__main__":
    unittest.main()
