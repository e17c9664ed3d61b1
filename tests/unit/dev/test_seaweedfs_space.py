"""SeaweedFS refuses writes under 1% free disk with an opaque InternalError: starting on such a disk is refused
first, saying why (kubestill.dev.seaweedfs.check_free_space)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubestill.dev.seaweedfs import check_free_space


def test_a_disk_with_room_is_accepted(tmp_path: Path) -> None:
    check_free_space(tmp_path, min_fraction=0.0)


def test_a_disk_below_the_floor_is_refused_with_its_figures(tmp_path: Path) -> None:
    # No disk has 150% of its size free: the floor cannot be met.
    with pytest.raises(RuntimeError, match=r"less than 100% free: .* GiB free of \d+ GiB"):
        check_free_space(tmp_path, min_fraction=1.0)
