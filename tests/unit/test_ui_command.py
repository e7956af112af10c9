"""`sagellm ui` opens a browser only where there is a desktop to show it."""

from __future__ import annotations

from sagellmd.cli.ui_command import has_desktop


def test_a_desktop_is_an_x11_or_wayland_session_or_macos():
    assert has_desktop({"DISPLAY": ":0"}, "linux")
    assert has_desktop({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert has_desktop({}, "darwin")
    assert not has_desktop({}, "linux")
    assert not has_desktop({"DISPLAY": ""}, "linux")
