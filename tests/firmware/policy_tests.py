# When-to-report rules (firmware/policy.py).
import policy

BERLIN = (525200000, 134050000)


def fix(t, dlat=0, dlon=0, spd=40, hdg=90):
    return {"t": t, "lat": BERLIN[0] + dlat, "lon": BERLIN[1] + dlon, "spd": spd, "hdg": hdg}


def test_first_fix_is_always_reported():
    assert policy.Policy().due(fix(0))


def test_nothing_before_the_minimum_period():
    p = policy.Policy()
    p.reported(fix(0))
    assert not p.due(fix(5, dlat=100000))  # 1.1 km away but only 5 s later


def test_distance_triggers_after_the_minimum_period():
    p = policy.Policy()
    p.reported(fix(0))
    assert not p.due(fix(12, dlat=3000))  # ~33 m: below 50 m
    assert p.due(fix(12, dlat=5000))  # ~56 m


def test_heading_change_triggers_when_moving():
    p = policy.Policy()
    p.reported(fix(0, hdg=90))
    assert p.due(fix(11, hdg=110))
    assert not p.due(fix(11, hdg=100))


def test_heading_change_wraps_through_north():
    p = policy.Policy()
    p.reported(fix(0, hdg=355))
    assert not p.due(fix(11, hdg=5))
    assert p.due(fix(11, hdg=15))


def test_speed_change_triggers():
    p = policy.Policy()
    p.reported(fix(0, spd=40))
    assert p.due(fix(11, spd=52))


def test_heartbeat_at_the_maximum_period_even_when_parked():
    p = policy.Policy()
    p.reported(fix(0, spd=0))
    assert not p.due(fix(899, spd=0), ignition=False)
    assert p.due(fix(900, spd=0), ignition=False)


def test_ignition_selects_the_profile():
    p = policy.Policy()
    p.reported(fix(0, spd=0))
    assert p.due(fix(60, spd=0), ignition=True)  # moving profile: max period 60 s
    assert not p.due(fix(60, spd=0), ignition=False)


def test_events_are_reported_at_once():
    p = policy.Policy()
    p.reported(fix(0))
    assert p.due(fix(1), event=True)


def test_integer_distance_is_within_one_percent():
    # 0.01 degree of latitude = 1113.2 m; of longitude at 52.5 N = 677.6 m
    d_lat = policy.distance_m(BERLIN[0], BERLIN[1], BERLIN[0] + 100000, BERLIN[1])
    d_lon = policy.distance_m(BERLIN[0], BERLIN[1], BERLIN[0], BERLIN[1] + 100000)
    assert 1102 <= d_lat <= 1124, d_lat
    assert 670 <= d_lon <= 685, d_lon


def test_config_errors_name_the_field():
    bad = {"moving": dict(policy.DEFAULTS["moving"], min_period_s=0),
           "stopped": policy.DEFAULTS["stopped"], "moving_kmh": 5}
    assert policy.check(bad) == ["moving.min_period_s: at least 1"]
    assert policy.check(policy.DEFAULTS) == []
    assert "moving_kmh: a whole number 0..100" in policy.check({"moving": policy.DEFAULTS["moving"],
                                                                 "stopped": policy.DEFAULTS["stopped"],
                                                                 "moving_kmh": "fast"})
