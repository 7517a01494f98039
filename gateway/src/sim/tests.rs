//! Behaviour a user of `gridserve simulate` would notice: scenario errors that name the key,
//! seeded arrivals, requests that run to their length, energy that adds up, the clock and
//! power-limit knobs acting, the cap accounting, and fleet routing.

use std::path::{Path, PathBuf};

use super::fleet::{self, route, FleetRun};
use super::scenario::{Overrides, Scenario};
use super::Summary;
use crate::power::controller::ControllerConfig;
use crate::GatewayError;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn scenarios_dir() -> PathBuf {
    config_dir().join("scenarios")
}

/// A one-H100 scenario; `extra` lines go into `[policy]`, `workload` replaces the workload.
fn scenario(policy: &str, workload: &str, envelope: &str, duration: f64) -> Scenario {
    let text = format!(
        "name = \"t\"\nseed = 3\nduration_seconds = {duration}\n\
         [hardware]\ngpu = \"h100-sxm\"\nmodel = \"llama-3.1-8b\"\n\
         [policy]\n{policy}\n[workload]\n{workload}\n{envelope}\n"
    );
    Scenario::parse(&text, Path::new("."), &config_dir(), &Overrides::default()).unwrap()
}

/// Decode-heavy: short prompts, long outputs, enough requests to keep ~100 running.
const DECODE_HEAVY: &str = "rate_per_second = 6.0\nprompt_tokens_median = 64\n\
    prompt_tokens_sigma = 0.0\noutput_tokens_median = 400\noutput_tokens_sigma = 0.0";

/// The `[controller]` section of the shipped default config.
fn controller() -> ControllerConfig {
    crate::config::Config::load(&config_dir().join("default.toml"))
        .unwrap()
        .controller
}

fn run(s: &Scenario) -> (FleetRun, Summary) {
    let run = fleet::run(s, &controller()).unwrap();
    let summary = Summary::from_run(s, &run);
    (run, summary)
}

fn parse_err(text: &str) -> String {
    match Scenario::parse(text, Path::new("."), &config_dir(), &Overrides::default()) {
        Err(GatewayError::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn sim_scenario_errors_name_the_key() {
    let good = "name = \"x\"\nseed = 1\nduration_seconds = 10\n[hardware]\ngpu = \"h100-sxm\"\n\
                model = \"llama-3.1-8b\"\n[workload]\nrate_per_second = 1.0\n";
    Scenario::parse(good, Path::new("."), &config_dir(), &Overrides::default()).unwrap();
    let unknown = parse_err(&good.replace("[workload]", "[workload]\nrate = 2.0"));
    assert!(unknown.contains("unknown field `rate`"), "{unknown}");
    let gpu = parse_err(&good.replace("h100-sxm", "h999"));
    assert!(
        gpu.contains("hardware.gpu") && gpu.contains("h999"),
        "{gpu}"
    );
    let rate = parse_err(&good.replace("rate_per_second = 1.0", "rate_per_second = -2.0"));
    assert!(rate.contains("workload.rate_per_second"), "{rate}");
    let clock = parse_err(&good.replace("[workload]", "[policy]\nsm_clock_mhz = 5000\n[workload]"));
    assert!(clock.contains("policy.sm_clock_mhz"), "{clock}");
    let neither = parse_err(&good.replace("rate_per_second = 1.0", ""));
    assert!(neither.contains("`workload`"), "{neither}");
    let kv = parse_err(&good.replace("[workload]", "[hardware]\n").replace(
        "model = \"llama-3.1-8b\"\n[hardware]\n",
        "model = \"llama-3.1-8b\"\ngpu_memory_utilization = 0.1\n[workload]",
    ));
    assert!(kv.contains("gpu_memory_utilization"), "{kv}");
}

#[test]
fn sim_arrivals_are_seeded_and_have_the_configured_rate() {
    let s = scenario("", "rate_per_second = 5.0", "", 10.0);
    let a: Vec<_> = s.workload.arrivals(7).take(20_000).collect();
    let b: Vec<_> = s.workload.arrivals(7).take(20_000).collect();
    let c: Vec<_> = s.workload.arrivals(8).take(20_000).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let rate = a.len() as f64 / a.last().unwrap().at_seconds;
    assert!((rate - 5.0).abs() < 0.15, "rate {rate}");
    let mut prompts: Vec<usize> = a.iter().map(|x| x.prompt_tokens).collect();
    prompts.sort_unstable();
    let median = prompts[prompts.len() / 2] as f64;
    assert!((median - 1020.0).abs() < 60.0, "median prompt {median}");
    assert!(a.windows(2).all(|w| w[0].at_seconds <= w[1].at_seconds));
}

#[test]
fn sim_every_request_of_a_trace_completes_with_its_output_length() {
    let s = Scenario::load(
        &scenarios_dir().join("trace-h100.toml"),
        &config_dir(),
        &Overrides::default(),
    )
    .unwrap();
    let arrivals: Vec<_> = s.workload.arrivals(s.seed).collect();
    assert_eq!(arrivals.len(), 120);
    let (_, summary) = run(&s);
    assert_eq!(summary.requests_arrived, 120);
    assert_eq!(summary.requests_completed, 120);
    assert_eq!(summary.requests_unfinished, 0);
    let expected: usize = arrivals.iter().map(|a| a.output_tokens).sum();
    assert_eq!(summary.output_tokens, expected as u64);
    let prompts: usize = arrivals.iter().map(|a| a.prompt_tokens).sum();
    assert_eq!(summary.prompt_tokens, prompts as u64);
}

#[test]
fn sim_energy_equals_the_twins_integral_and_the_time_series_adds_up() {
    let s = scenario("", DECODE_HEAVY, "", 20.0);
    let (run, summary) = run(&s);
    let twin: f64 = run
        .replicas
        .iter()
        .map(|r| r.cluster().total_energy_joules())
        .sum();
    assert_eq!(summary.energy_joules, twin);
    let binned: f64 = run
        .recorder
        .series
        .bins
        .iter()
        .map(|b| b.energy_joules)
        .sum();
    assert!((binned - twin).abs() < 1e-6 * twin, "{binned} vs {twin}");
    // Busy most of the time: well above idle, below the 700 W limit.
    assert!(summary.average_power_watts > 300.0 && summary.average_power_watts < 700.0);
}

#[test]
fn sim_lower_locked_clock_lowers_power_and_raises_itl_in_decode() {
    let (_, free) = run(&scenario("", DECODE_HEAVY, "", 30.0));
    let (_, locked) = run(&scenario("sm_clock_mhz = 900", DECODE_HEAVY, "", 30.0));
    assert!(
        locked.average_power_watts < 0.85 * free.average_power_watts,
        "{} W locked vs {} W",
        locked.average_power_watts,
        free.average_power_watts
    );
    assert!(locked.itl_seconds.p50 > free.itl_seconds.p50);
    assert!(locked.mean_sm_clock_mhz < 1000.0 && free.mean_sm_clock_mhz > 1900.0);
    assert!(locked.output_tokens_per_joule > free.output_tokens_per_joule);
}

#[test]
fn sim_time_above_cap_counts_overdraw_and_a_matching_power_limit_removes_it() {
    let cap = "[envelope]\nsteps = [{ at_seconds = 0, cap_watts = 400 }]";
    let (_, uncapped) = run(&scenario("", DECODE_HEAVY, cap, 30.0));
    assert!(uncapped.time_above_cap_seconds > 10.0, "{uncapped:?}");
    assert!(uncapped.above_cap_window_share > 0.3);
    let (_, limited) = run(&scenario(
        "power_limit_watts = 400",
        DECODE_HEAVY,
        cap,
        30.0,
    ));
    assert!(limited.above_cap_window_share <= 0.05, "{limited:?}");
    assert!(limited.peak_1s_power_watts < 420.0, "{limited:?}");
    let (_, none) = run(&scenario("", DECODE_HEAVY, "", 30.0));
    assert_eq!(none.time_above_cap_seconds, 0.0);
}

#[test]
fn sim_fleet_routes_to_the_shortest_queue_and_spreads_load() {
    let mut s = scenario("", DECODE_HEAVY, "", 20.0);
    s.replicas = 4;
    let mut replicas = fleet::build_replicas(&s, &controller());
    let a = s.workload.arrivals(1).next().unwrap();
    replicas[0].admit(0, &a).unwrap();
    replicas[1].admit(1, &a).unwrap();
    assert_eq!(route(&replicas), 2);
    let (run, summary) = run(&s);
    let idle_joules = s.hardware.profile.idle_watts * s.duration_seconds;
    for r in &run.replicas {
        assert!(r.cluster().total_energy_joules() > 2.0 * idle_joules);
    }
    assert_eq!(summary.gpus, 4);
}

#[test]
fn sim_same_seed_gives_the_same_summary() {
    let s = scenario("", "rate_per_second = 4.0", "", 15.0);
    let strip = |mut x: Summary| {
        (x.wall_seconds, x.speedup) = (0.0, 0.0);
        x
    };
    let (_, a) = run(&s);
    let (_, b) = run(&s);
    assert_eq!(strip(a.clone()), strip(b));
    let mut other = s.clone();
    other.seed += 1;
    let (_, c) = run(&other);
    assert_ne!(strip(a), strip(c));
}

/// A −30 % step at 10 s under decode-heavy load, run with each policy.
fn step_down(kind: &str) -> Summary {
    let cap = "[envelope]\nsteps = [{ at_seconds = 0, cap_watts = 700 }, \
               { at_seconds = 10, cap_watts = 420 }]";
    run(&scenario(
        &format!("kind = \"{kind}\""),
        DECODE_HEAVY,
        cap,
        40.0,
    ))
    .1
}

#[test]
fn sim_adaptive_policy_holds_the_cap_at_least_as_efficiently_as_a_static_limit() {
    let fixed = step_down("fixed");
    let limit = step_down("cap_limit");
    let adaptive = step_down("adaptive");
    for (name, s) in [
        ("fixed", &fixed),
        ("cap_limit", &limit),
        ("adaptive", &adaptive),
    ] {
        println!(
            "{name}: {:.3} tok/J, {:.1} s above cap ({:.3} of windows), ITL p99 {:.1} ms",
            s.output_tokens_per_joule,
            s.time_above_cap_seconds,
            s.above_cap_window_share,
            s.itl_seconds.p99 * 1e3
        );
    }
    assert!(fixed.above_cap_window_share > 0.3, "{fixed:?}");
    // The first second after the step is allowed to be over (the 1 s average needs time).
    assert!(adaptive.time_above_cap_seconds <= 1.0, "{adaptive:?}");
    assert!(
        adaptive.output_tokens_per_joule >= limit.output_tokens_per_joule,
        "adaptive {} vs power limit = cap {} tok/J",
        adaptive.output_tokens_per_joule,
        limit.output_tokens_per_joule
    );
    assert_eq!(adaptive.requests_refused, 0);
}
