//! Tests of the powercap parsers, zone selection, the RAPL sensor core, and reading a
//! powercap tree laid out in a temporary directory.

use std::time::Duration;

use super::*;

#[test]
fn counters_parse_with_their_newline() {
    assert_eq!(parse_counter_uj("262143328850\n"), Ok(262_143_328_850));
    assert!(parse_counter_uj("").is_err());
    assert!(parse_counter_uj("-5\n").is_err());
}

#[test]
fn packages_and_dram_are_summed_but_not_parts_of_the_package() {
    assert_eq!(
        zone_label("intel-rapl:0", "package-0").as_deref(),
        Some("package-0")
    );
    assert_eq!(
        zone_label("intel-rapl:1", "package-1").as_deref(),
        Some("package-1")
    );
    assert_eq!(
        zone_label("intel-rapl:1:0", "dram").as_deref(),
        Some("dram-1")
    );
    assert_eq!(zone_label("intel-rapl:0:0", "core"), None);
    assert_eq!(zone_label("intel-rapl:0:1", "uncore"), None);
    assert_eq!(zone_label("intel-rapl:1", "psys"), None);
    // The MMIO interface duplicates the package counter.
    assert_eq!(zone_label("intel-rapl-mmio:0", "package-0"), None);
    assert_eq!(zone_label("intel-rapl", "package-0"), None);
}

fn zone(label: &str, max_range_uj: Option<u64>) -> RaplZone {
    RaplZone {
        label: label.into(),
        energy_path: PathBuf::from("/nonexistent"),
        max_range_uj,
    }
}

#[test]
fn power_is_the_counter_delta_over_time_and_wraps_are_unwrapped() {
    let mut s = RaplSensor::new(vec![zone("package-0", Some(1_000_000_000))]);
    let t0 = Instant::now();
    let first = s.observe(t0, &[999_000_000]);
    assert_eq!(first.source, EnergySource::Rapl);
    assert_eq!(first.total_energy_joules(), 0.0);
    // 2 s later the counter wrapped: 1 J to the top, then 99 J: 100 J in 2 s = 50 W.
    let s2 = s.observe(t0 + Duration::from_secs(2), &[99_000_000]);
    assert!((s2.total_energy_joules() - 100.0).abs() < 1e-9);
    assert!((s2.total_watts() - 50.0).abs() < 1e-9);
}

#[test]
fn a_reset_without_a_range_carries_the_last_power_over() {
    let mut s = RaplSensor::new(vec![zone("package-0", None)]);
    let t0 = Instant::now();
    s.observe(t0, &[10_000_000]);
    s.observe(t0 + Duration::from_secs(1), &[40_000_000]); // 30 W
    let r = s.observe(t0 + Duration::from_secs(3), &[5]);
    assert!(
        (r.total_energy_joules() - 90.0).abs() < 1e-6,
        "30 J + 2 s × 30 W"
    );
    assert!((r.total_watts() - 30.0).abs() < 1e-6);
}

#[test]
fn a_powercap_tree_is_found_and_read() {
    let root = std::env::temp_dir().join(format!("gridserve-powercap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (dir, name, energy) in [
        ("intel-rapl:0", "package-0", "1000000"),
        ("intel-rapl:0:0", "core", "500000"),
        ("intel-rapl:0:1", "dram", "200000"),
    ] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{energy}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), "262143328850\n").unwrap();
    }
    let zones = find_zones(&root).unwrap();
    let labels: Vec<_> = zones.iter().map(|z| z.label.as_str()).collect();
    assert_eq!(labels, ["dram-0", "package-0"]);
    assert_eq!(zones[1].max_range_uj, Some(262_143_328_850));
    let mut sensor = RaplSensor::open(&root).unwrap();
    std::fs::write(root.join("intel-rapl:0/energy_uj"), "3000000\n").unwrap();
    let s = sensor.sample().unwrap();
    assert!((s.devices[1].energy_joules - 2.0).abs() < 1e-9);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_missing_or_empty_root_is_unavailable() {
    let missing = Path::new("/nonexistent/powercap");
    assert!(matches!(
        RaplSensor::open(missing),
        Err(GatewayError::PowerUnavailable(_))
    ));
    let empty =
        std::env::temp_dir().join(format!("gridserve-powercap-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        RaplSensor::open(&empty),
        Err(GatewayError::PowerUnavailable(_))
    ));
    std::fs::remove_dir_all(&empty).unwrap();
}
