"""`sagellm status --watch`: every engine, redrawn whenever the daemon records an event.

The loop long-polls `GET /v1/events?after=<cursor>&wait=<s>`; only an answer with events
makes it read `/v1/status` again and redraw. An empty answer (after `UPTIME_REFRESH_S`)
only recomputes the uptime column from what is already on screen, so an idle daemon costs
one request per `UPTIME_REFRESH_S`.

When the daemon cannot be reached (stopped, restarting, upgraded) the view says
"reconnecting to <url>..." and tries again every `RECONNECT_S`; once the daemon answers,
the event cursor is read afresh (a new daemon may have a new database) and the view
resumes. Three views share the loop: a rich Live table on a terminal, one plain line per
change otherwise, and one JSON status per line with `--json`.

The parts, one concern each: `snapshot` (what is shown: rows from a status answer and the
newest events), `screen` (the rich table and screen), `views` (Live, plain and JSON
outputs), `loop` (long-polls, reconnects, the `status --watch` entry point).
"""
