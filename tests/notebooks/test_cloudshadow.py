"""The geometric cloud-shadow mask of 04 (cscale_extensions.notebook.cloudshadow) on synthetic
scenes whose shadow is placed by hand from the sun's geometry, and the sun position against
almanac values (fast; no stack)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pystac
import pytest

from cscale_extensions.notebook.cloudshadow import (
    SunAngles,
    cloud_shadow,
    solar_position,
    sun_angles,
)

PIXEL = 20.0


def _scene(cloud_at, dark_at, shape=(200, 200), size=10):
    """A cloud mask with one size x size cloud at ``cloud_at`` (row, col) and a dark mask with
    size x size dark patches at each of ``dark_at``."""
    cloud = np.zeros(shape, bool)
    dark = np.zeros(shape, bool)
    r, c = cloud_at
    cloud[r : r + size, c : c + size] = True
    for r, c in dark_at:
        dark[r : r + size, c : c + size] = True
    return cloud, dark


def _box(shape, r, c, size=10):
    out = np.zeros(shape, bool)
    out[r : r + size, c : c + size] = True
    return out


def test_a_cloud_under_a_southern_sun_has_its_shadow_due_north_not_on_the_sun_side():
    """Sun due south (azimuth 180°) at 45°: a cloud 1000 m high casts its shadow 1000 m =
    50 pixels north (rows decrease northwards). A dark patch of the same shape 50 pixels south,
    on the sun side, is no shadow."""
    cloud, dark = _scene((100, 100), [(50, 100), (150, 100)])
    res = cloud_shadow(cloud, dark, sun=SunAngles(180.0, 45.0, "test"), pixel_size=PIXEL)
    assert np.array_equal(res.shadow, _box(cloud.shape, 50, 100))
    assert len(res.matches) == 1 and res.matches[0]["height_m"] == pytest.approx(1000.0)


def test_the_shadow_of_a_south_east_sun_lies_north_west_and_the_nearest_match_wins():
    """Sun in the south-east (azimuth 135°) at 45°: a cloud 1414.2 m high casts its shadow
    1414.2 m north-west, i.e. 1000 m north and 1000 m west = 50 rows up, 50 columns left. A
    second dark patch further along the same line (80 pixels) is not taken: the lowest height
    that matches is the cloud's."""
    cloud, dark = _scene((120, 120), [(70, 70), (40, 40)])
    res = cloud_shadow(cloud, dark, sun=SunAngles(135.0, 45.0, "test"), pixel_size=PIXEL)
    assert np.array_equal(res.shadow, _box(cloud.shape, 70, 70))
    assert res.matches[0]["height_m"] == pytest.approx(1414.2, abs=PIXEL)


def test_only_the_dark_part_of_the_projected_cloud_is_shadow():
    """Half of the projected shape is dark: a match at min_match 0.5, and only that half is
    shadow (the other half, bright, is sunlit ground)."""
    cloud, _ = _scene((100, 100), [])
    dark = _box(cloud.shape, 50, 100) & (np.arange(200)[None, :] < 105)
    res = cloud_shadow(cloud, dark, sun=SunAngles(180.0, 45.0, "test"), pixel_size=PIXEL)
    assert np.array_equal(res.shadow, dark)


def test_a_large_cloud_whose_shadow_touches_it_gets_its_whole_visible_shadow():
    """A 100 x 100 cloud (scored on a sample of its pixels) 1000 m high under a southern sun at
    45°: its shadow is the same square 50 rows north, half of it under the cloud itself; the
    visible half, rows 100-149, is the shadow, not a thinner strip at a lower height."""
    cloud = _box((300, 300), 150, 100, size=100)
    dark = _box((300, 300), 100, 100, size=100)
    res = cloud_shadow(cloud, dark, sun=SunAngles(180.0, 45.0, "t"), pixel_size=PIXEL)
    assert np.array_equal(res.shadow, dark & ~cloud)
    assert res.matches[0]["height_m"] == pytest.approx(1000.0)


def test_no_shadow_when_nothing_dark_lies_away_from_the_sun_or_it_falls_outside():
    cloud, dark = _scene((100, 100), [(150, 100)])  # dark only on the sun side
    res = cloud_shadow(cloud, dark, sun=SunAngles(180.0, 45.0, "test"), pixel_size=PIXEL)
    assert not res.shadow.any() and res.matches == [] and res.n_clouds == 1
    cloud, dark = _scene((5, 100), [(150, 100)])  # the shadow would lie north of the image
    assert not cloud_shadow(cloud, dark, sun=SunAngles(180.0, 45.0, "t"), pixel_size=PIXEL).matches


def test_clouds_smaller_than_the_minimum_cast_no_shadow():
    cloud, dark = _scene((100, 100), [(50, 100)], size=2)
    res = cloud_shadow(cloud, dark, sun=SunAngles(180.0, 45.0, "t"), pixel_size=PIXEL)
    assert not res.shadow.any()


def test_solar_position_matches_the_almanac():
    """Berlin (52.5° N, 12.6° E) on 2017-02-16: solar noon at ~11:24 UTC (12:00 − 50.4 min of
    longitude + 14.2 min equation of time), the sun due south at 90 − 52.5 + δ with the
    declination δ ≈ −12.5°, so ~25.0°; at the March 2021 equinox, noon at (0°, 0°) is ~overhead."""
    az, el = solar_position(datetime(2017, 2, 16, 11, 24, tzinfo=UTC), 12.6, 52.5)
    assert az == pytest.approx(180.0, abs=1.0) and el == pytest.approx(25.0, abs=0.5)
    az, el = solar_position(datetime(2017, 2, 16, 8, 0, tzinfo=UTC), 12.6, 52.5)
    assert 110 < az < 140 and 5 < el < 15  # morning: south-east, low
    assert solar_position(datetime(2021, 3, 20, 12, 7, tzinfo=UTC), 0.0, 0.0)[1] > 88


def _item(properties):
    geom = {"type": "Point", "coordinates": [12.6, 52.5]}
    return pystac.Item(
        "x", geom, [12.5, 52.4, 12.7, 52.6], datetime(2017, 2, 16, 11, 24, tzinfo=UTC), properties
    )


def test_sun_angles_come_from_the_item_when_it_has_them_else_are_computed_and_say_so():
    a = sun_angles(_item({"view:sun_azimuth": 150.0, "view:sun_elevation": 30.0}))
    assert (a.azimuth, a.elevation) == (150.0, 30.0) and "view:sun_azimuth" in a.source
    a = sun_angles(_item({"s2:mean_solar_azimuth": 160.0, "s2:mean_solar_zenith": 65.0}))
    assert (a.azimuth, a.elevation) == (160.0, 25.0)  # elevation = 90° − zenith
    a = sun_angles(_item({}))
    assert "computed" in a.source and a.elevation == pytest.approx(25.0, abs=0.5)
