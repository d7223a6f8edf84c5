"""The mark by which hubfuse's local hub names itself: a header on every answer it sends.

A leaf, so that the hub client (`hubfuse.hub`) and the server (`hubfuse.localhub`) share it without
either importing the other.
"""

from __future__ import annotations

LOCALHUB_HEADER = "X-Hubfuse-Localhub"
