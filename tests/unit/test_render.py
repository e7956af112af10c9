"""The CLI's tables at a given width: which columns give way first, that ids, states, pids
and ports are never cut, that cut cells end in an ellipsis on one line, and the whole rows
printed on a pipe. Rendered with real rich consoles of fixed widths (no terminal)."""

from __future__ import annotations

import pytest
from rich.console import Console, RenderableType

from sagellmd.cli.columns import Column, fit
from sagellmd.cli.render import (
    ENGINE_COLUMNS,
    engines_table,
    event_line,
    local_node_name,
    nodes_line,
    one_line_text,
    print_table,
)
from sagellmd.cli.watch_screen import COLUMNS as WATCH_COLUMNS
from sagellmd.cli.watch_screen import Snapshot, watch_row, watch_table

ENGINES = [
    {"id": "qwen-mini.chat", "kind": "llm", "model": "Qwen/Qwen2.5-0.5B-Instruct",
     "state": "ready", "pid": 123456, "port": 20001, "restarts": 1, "label": "chat bot",
     "message": "healthy after 1.3s", "gpus": [0], "gpu_memory_gb": 6.9,
     "started_at": "2026-01-01T00:00:00Z"},
    {"id": "qwen-mini.big", "kind": "llm", "model": "Qwen/Qwen2.5-72B-Instruct",
     "state": "unhealthy", "pid": 7, "port": 20002, "restarts": 12, "label": None,
     "message": "needs 2 GPUs x 80.0 GiB;\nwaiting for GPU memory: GPU0 has 12.1 GiB free"},
]  # fmt: skip


def render(renderable: RenderableType, width: int) -> list[str]:
    out = Console(width=width, highlight=False, no_color=True)
    with out.capture() as captured:
        out.print(renderable)
    return captured.get().splitlines()


def headers(line: str, columns: tuple[Column, ...]) -> list[str]:
    known = sorted((column.header for column in columns), key=len, reverse=True)
    found, rest = [], line.strip()
    while rest:
        header = next(h for h in known if rest.startswith(h))
        found.append(header)
        rest = rest[len(header) :].strip()
    return found


def test_fit_drops_the_least_important_column_first_and_never_cuts_a_kept_one():
    columns = [
        Column("ID", 0, keep=True),
        Column("A", 3),
        Column("NOTE", 1, cut=True, min_width=6),
        Column("B", 2),
    ]
    natural = [10, 5, 30, 5]
    assert fit(columns, natural, None) == natural
    assert fit(columns, natural, 200) == natural
    # 10+5+30+5 and three gaps of 2 = 56: at 40 NOTE is cut to what remains.
    assert fit(columns, natural, 40) == [10, 5, 14, 5]
    # At 27 NOTE at its minimum (6) still needs 10+5+6+5+6 = 32: A (priority 3) goes,
    # and NOTE gets the rest: 27 - 10 - 5 - 4.
    assert fit(columns, natural, 27) == [10, None, 8, 5]
    assert fit(columns, natural, 18) == [10, None, 6, None]
    assert fit(columns, natural, 12) == [10, None, None, None]
    # Narrower than the kept columns: they stay whole (the terminal wraps the line).
    assert fit(columns, natural, 4) == [10, None, None, None]


def test_fit_shares_the_spare_width_between_cut_columns():
    columns = [Column("ID", 0, keep=True), Column("MODEL", 2, cut=True, min_width=5),
               Column("MESSAGE", 1, cut=True, min_width=7)]  # fmt: skip
    # Minimums 3 + 5 + 7 + 4 = 19; 10 spare: one cell each in turn.
    assert fit(columns, [3, 20, 40], 29) == [3, 10, 12]
    # The model is whole after 4 more: the message gets all the rest.
    assert fit(columns, [3, 9, 40], 29) == [3, 9, 13]


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (60, ["ID", "STATE", "PID", "PORT", "MESSAGE"]),
        (80, ["ID", "MODEL", "STATE", "PID", "PORT", "RESTARTS", "MESSAGE"]),
        (120, ["ID", "KIND", "MODEL", "STATE", "PID", "PORT", "RESTARTS", "LABEL", "MESSAGE"]),
    ],
)
def test_status_table_at_60_80_120_columns(width: int, expected: list[str]):
    lines = render(engines_table(ENGINES), width)
    assert headers(lines[0], ENGINE_COLUMNS) == expected
    assert len(lines) == 1 + len(ENGINES), lines  # one line per engine: nothing folds
    for line, engine in zip(lines[1:], ENGINES, strict=True):
        assert len(line) <= width
        words = line.split()
        assert words[0] == engine["id"]
        for key in ("state", "pid", "port"):
            assert str(engine[key]) in words, (key, line)
    # The long message is cut with an ellipsis, not folded.
    assert lines[2].rstrip().endswith("…"), lines[2]


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (60, ["ENGINE", "STATE", "PID", "PORT", "LAST EVENT"]),
        (80, ["ENGINE", "MODEL", "STATE", "PID", "PORT", "RESTARTS", "LAST EVENT"]),
        (
            120,
            [
                "ENGINE",
                "KIND",
                "MODEL",
                "STATE",
                "PID",
                "PORT",
                "GPUS",
                "MEMORY",
                "RESTARTS",
                "UPTIME",
                "LAST EVENT",
            ],
        ),  # fmt: skip
    ],
)
def test_watch_table_at_60_80_120_columns(width: int, expected: list[str]):
    event = {"ts": "2026-01-01T00:00:01Z", "type": "exited", "message": "exit 1\nTraceback"}
    rows = [watch_row(engine, event) for engine in ENGINES]
    lines = render(watch_table(rows, now=1767225700.0), width)
    assert headers(lines[0], WATCH_COLUMNS) == expected
    assert len(lines) == 1 + len(ENGINES), lines
    for line, engine in zip(lines[1:], ENGINES, strict=True):
        assert len(line) <= width
        assert line.split()[0] == engine["id"]
        assert {engine["state"], str(engine["pid"]), str(engine["port"])} <= set(line.split())


def test_free_text_cells_are_one_line():
    assert one_line_text("a\n  b\r\n\tc").plain == "a b c"
    assert one_line_text(None).plain == "-"


def test_status_on_a_pipe_prints_every_column_whole(capsys: pytest.CaptureFixture[str]):
    print_table(engines_table(ENGINES))
    lines = capsys.readouterr().out.splitlines()
    assert headers(lines[0], ENGINE_COLUMNS) == [column.header for column in ENGINE_COLUMNS]
    assert len(lines) == 3
    assert "…" not in "".join(lines)
    assert lines[2].endswith(
        "needs 2 GPUs x 80.0 GiB; waiting for GPU memory: GPU0 has 12.1 GiB free"
    )
    assert all(line == line.rstrip() for line in lines)


def test_an_event_with_a_multi_line_message_prints_as_one_line():
    event = {"ts": "2026-01-01T00:00:01Z", "engine": "x", "type": "exited",
             "message": "exited 1; it said:\n  Traceback (most recent call last)\n"}  # fmt: skip
    assert event_line(event) == (
        "2026-01-01T00:00:01Z  x  exited  exited 1; it said: Traceback (most recent call last)"
    )
    row = watch_row({"id": "x", "state": "backoff"}, event)
    assert "\n" not in row.line(now=0.0)
    assert row.last_event.endswith("exited exited 1; it said: Traceback (most recent call last)")


PD_ENGINE = {
    "id": "pd.chat", "kind": "llm", "model": "Qwen/Qwen3-8B", "state": "ready", "pid": None,
    "port": None, "restarts": 0, "label": None, "message": "1 prefill and 1 decode ready",
    "instances": [
        {"id": "pd.chat.prefill-0", "role": "prefill", "kind": "llm", "model": "Qwen/Qwen3-8B",
         "state": "ready", "pid": 11, "port": 30001, "restarts": 0, "label": None,
         "message": "healthy", "gpus": [0]},
        {"id": "pd.chat.decode-0", "role": "decode", "kind": "llm", "model": "Qwen/Qwen3-8B",
         "state": "starting", "pid": 12, "port": 30002, "restarts": 1, "label": None,
         "message": "starting", "gpus": [1]},
    ],
}  # fmt: skip


def test_a_disaggregated_engine_lists_its_instances_indented_with_their_role(
    capsys: pytest.CaptureFixture[str],
):
    print_table(engines_table([PD_ENGINE]))
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[:4] for line in lines] == [
        ["pd.chat", "llm", "Qwen/Qwen3-8B", "ready"],
        ["pd.chat.prefill-0", "prefill", "Qwen/Qwen3-8B", "ready"],
        ["pd.chat.decode-0", "decode", "Qwen/Qwen3-8B", "starting"],
    ]
    assert not lines[0].startswith(" ")
    assert lines[1].startswith("  pd.chat.prefill-0") and lines[2].startswith("  pd.chat.decode")
    rows = Snapshot({"engines": [PD_ENGINE]}, cursor=0).rows()
    assert [(row.id, row.kind, row.gpus) for row in rows] == [
        ("pd.chat", "llm", ()),
        ("  pd.chat.prefill-0", "prefill", (0,)),
        ("  pd.chat.decode-0", "decode", (1,)),
    ]


def test_on_a_cluster_status_shows_each_engine_s_node_and_watch_its_gpus_there():
    nodes = [
        {"name": "box1", "local": True, "alive": True},
        {"name": "box2", "local": False, "alive": True},
        {"name": "box3", "local": False, "alive": False},
    ]
    assert nodes_line(nodes) == "nodes: box1 (daemon), box2, box3 dead"
    assert nodes_line([]) is None and local_node_name(nodes) == "box1"
    engines = [{**ENGINES[0], "node": "box2"}, {**ENGINES[1], "node": None}]
    lines = render(engines_table(engines, local_node_name(nodes)), 200)
    assert "NODE" in lines[0].split()
    assert "box2" in lines[1].split() and "box1" in lines[2].split()
    assert "NODE" not in render(engines_table(engines), 200)[0].split()
    row = watch_row({"id": "x", "state": "ready", "pid": 1, "gpus": [0, 1], "node": "box2"}, None)
    assert row.gpus_text() == "box2:0,1" and "gpus box2:0,1" in row.line(now=0.0)
