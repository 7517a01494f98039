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

#[test]
fn sim_latencies_are_recorded_per_priority_tier() {
    use super::stats::{tier_index, Recorder};
    use crate::engine::Priority;
    let mut rec = Recorder::new(1.0);
    rec.ttft(0.25, Priority::Interactive);
    rec.itl(0.01, Priority::Interactive);
    rec.itl(0.02, Priority::Flexible);
    rec.e2e(1.0, Priority::Flexible);
    assert_eq!(rec.ttft.len(), 1);
    assert_eq!(rec.itl.len(), 2);
    let i = &rec.tiers[tier_index(Priority::Interactive)];
    assert_eq!((i.ttft.len(), i.itl.len(), i.completed), (1, 1, 0));
    let f = &rec.tiers[tier_index(Priority::Flexible)];
    assert_eq!((f.ttft.len(), f.itl.len(), f.completed), (0, 1, 1));
    assert!(rec.tiers[tier_index(Priority::Standard)].itl.is_empty());

    // A run with a mix: every completion lands in exactly one tier, and a tier with no
    // traffic stays empty.
    let mix = format!("{DECODE_HEAVY}\npriority_mix = {{ interactive = 0.3, standard = 0.7 }}");
    let s = scenario("", &mix, "", 20.0);
    let (run, summary) = run(&s);
    let tiers = &run.recorder.tiers;
    assert_eq!(
        tiers.iter().map(|t| t.completed).sum::<u64>(),
        summary.requests_completed
    );
    assert_eq!(
        tiers.iter().map(|t| t.ttft.len()).sum::<u64>(),
        run.recorder.ttft.len()
    );
    assert_eq!(
        tiers.iter().map(|t| t.itl.len()).sum::<u64>(),
        run.recorder.itl.len()
    );
    assert!(tiers[0].ttft.len() > 10 && tiers[1].ttft.len() > tiers[0].ttft.len());
    assert!(tiers[2].ttft.is_empty());
    assert_eq!(summary.tiers.len(), 3);
    assert_eq!(summary.tiers[0].tier, "interactive");
    assert!(summary.tiers[0].ttft_seconds.p99 > 0.0 && summary.tiers[2].itl_seconds.p99 == 0.0);
    assert!(summary.to_text().contains("interactive"));
    let json = serde_json::to_value(&summary).unwrap();
    assert!(json["tiers"][0]["itl_seconds"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn sim_gpu_override_and_fractions_of_the_rated_fleet_power() {
    let text = "name = \"x\"\nseed = 1\nduration_seconds = 100\nreplicas = 2\n[hardware]\n\
                gpu = \"h100-sxm\"\nmodel = \"llama-3.1-8b\"\n[workload]\nrate_per_second = 1.0\n\
                [envelope]\nsteps = [{ at_seconds = 0, cap_fraction = 0.5 }]\n";
    let over = Overrides {
        gpu: Some("h200-sxm".into()),
        ..Overrides::default()
    };
    let s = Scenario::parse(text, Path::new("."), &config_dir(), &over).unwrap();
    assert_eq!(s.hardware.gpu, "h200-sxm");
    assert_eq!(s.hardware.profile.hbm_bytes, 141e9);
    // Two GPUs × 700 W rated.
    assert_eq!(s.envelope.reference_watts(), Some(1400.0));
    assert_eq!(s.envelope.cap_at(1.0), Some(700.0));
    let clocked = Overrides {
        sm_clock_mhz: Some(1200),
        ..Overrides::default()
    };
    let s = Scenario::parse(text, Path::new("."), &config_dir(), &clocked).unwrap();
    assert_eq!(s.policy.sm_clock_mhz, Some(1200));
    let too_fast = Overrides {
        sm_clock_mhz: Some(5000),
        ..Overrides::default()
    };
    match Scenario::parse(text, Path::new("."), &config_dir(), &too_fast) {
        Err(GatewayError::Config(m)) => assert!(m.contains("policy.sm_clock_mhz"), "{m}"),
        other => panic!("{other:?}"),
    }
    let bad = Overrides {
        gpu: Some("h999".into()),
        ..Overrides::default()
    };
    match Scenario::parse(text, Path::new("."), &config_dir(), &bad) {
        Err(GatewayError::Config(m)) => assert!(m.contains("hardware.gpu") && m.contains("h999")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sim_grid_proof_scenarios_match_the_issue() {
    use super::envelope::SignalKind;
    let load = |f: &str| {
        Scenario::load(
            &scenarios_dir().join(f),
            &config_dir(),
            &Overrides::default(),
        )
        .unwrap()
    };
    let a = load("grid-a-step30.toml");
    let d = a.envelope.decreases();
    assert_eq!(d.len(), 1);
    assert!((d[0].cap_watts / a.envelope.cap_at(0.0).unwrap() - 0.7).abs() < 1e-9);
    let b = load("grid-b-phoenix.toml");
    let seg = b.envelope.segments();
    assert_eq!(
        (
            seg[1].ramp_seconds,
            seg[2].at_seconds - seg[1].settled_seconds()
        ),
        (900.0, 10_800.0)
    );
    assert!((seg[1].cap_watts / seg[0].cap_watts - 0.75).abs() < 1e-9);
    let c = load("grid-c-random-steps.toml");
    assert_eq!(
        (c.duration_seconds, c.envelope.segments().len()),
        (36_000.0, 200)
    );
    assert_eq!(c.envelope.kind(), SignalKind::RandomSteps);
    let reg = load("grid-d-regulation.toml");
    assert_eq!(reg.envelope.kind(), SignalKind::Regulation);
    let caps: Vec<f64> = reg
        .envelope
        .segments()
        .iter()
        .map(|s| s.cap_watts)
        .collect();
    assert!(caps
        .iter()
        .all(|w| (0.5 * 700.0 - 1e-9..=0.9 * 700.0 + 1e-9).contains(w)));
    assert!(
        (reg.envelope.segments()[1].at_seconds - reg.envelope.segments()[0].at_seconds - 2.0).abs()
            < 1e-9
    );
    for s in [&a, &b, &c, &reg] {
        assert_eq!(s.hardware.shape.name, "llama-3.1-8b");
        assert!(
            matches!(&s.workload, super::arrivals::Workload::Poisson(p) if p.priority_cdf[0] > 0.0)
        );
    }
}

#[test]
fn sim_step_down_and_tracking_are_reported_for_a_capped_run() {
    // Regulation from 5 s on a decode-heavy H100: the summary has both figures.
    let env = "[envelope]\nregulation = { center_fraction = 0.7, amplitude_fraction = 0.2, \
               period_seconds = 2, seed = 3, start_seconds = 5 }";
    let (_, capped) = run(&scenario("kind = \"cap_limit\"", DECODE_HEAVY, env, 30.0));
    let d = capped.step_down.clone().expect("decreases");
    assert!(d.decreases >= 3 && d.p99_seconds >= d.p50_seconds, "{d:?}");
    let t = capped.tracking.expect("a varying cap");
    assert!(t.correlation >= t.correlation_at_zero_delay && t.delay_seconds <= 10.0);
    assert!(t.correlation > 0.3, "{t:?}");
    assert!(capped.to_text().contains("step down") && capped.to_text().contains("tracking"));
    let (_, none) = run(&scenario("", DECODE_HEAVY, "", 10.0));
    assert!(none.step_down.is_none() && none.tracking.is_none());
}

#[test]
fn sim_proof_checks_pass_and_fail_against_the_targets() {
    use super::proof::evaluate;
    let cap = "[envelope]\nsteps = [{ at_seconds = 0, cap_watts = 700 }, \
               { at_seconds = 5, cap_watts = 420 }]";
    let mix = format!("{DECODE_HEAVY}\npriority_mix = {{ interactive = 0.3, standard = 0.7 }}");
    let (_, base) = run(&scenario("kind = \"cap_limit\"", &mix, cap, 15.0));
    let pass_of = |checks: &[super::proof::Check], metric: &str| {
        checks.iter().find(|c| c.metric == metric).unwrap().pass
    };
    // A run that meets every target against this baseline and reference.
    let mut good = base.clone();
    good.output_tokens_per_joule = base.output_tokens_per_joule * 1.31;
    good.above_cap_window_share = 0.0005;
    let d = good.step_down.as_mut().unwrap();
    (d.p50_seconds, d.p99_seconds) = (0.5, 0.9);
    let uncapped = base.clone();
    let c = evaluate(&good, &uncapped, &base, false);
    for m in [
        "step_down_p99_seconds",
        "above_cap_window_share",
        "tokens_per_joule_vs_cap_limit",
        "interactive_ttft_p99_vs_uncapped",
        "interactive_itl_p99_vs_uncapped",
    ] {
        assert_eq!(pass_of(&c, m), Some(true), "{m}: {c:?}");
    }
    assert_eq!(pass_of(&c, "correlation"), None); // not a regulation signal
                                                  // And one that misses each.
    let mut bad = good.clone();
    bad.output_tokens_per_joule = base.output_tokens_per_joule * 1.29;
    bad.above_cap_window_share = 0.0011;
    bad.step_down.as_mut().unwrap().p99_seconds = 1.1;
    bad.tiers[0].ttft_seconds.p99 = uncapped.tiers[0].ttft_seconds.p99 * 1.11;
    bad.tiers[0].itl_seconds.p99 = uncapped.tiers[0].itl_seconds.p99 * 1.11;
    let c = evaluate(&bad, &uncapped, &base, false);
    assert!(
        c.iter()
            .filter(|x| x.metric != "correlation" && x.metric != "delay_seconds")
            .all(|x| x.pass == Some(false)),
        "{c:?}"
    );
    assert!(c[0].cell.ends_with("FAIL"));
    // Without interactive traffic the latency checks do not apply.
    let mut quiet = good.clone();
    quiet.tiers[0].requests_completed = 0;
    let c = evaluate(&quiet, &uncapped, &base, false);
    assert_eq!(pass_of(&c, "interactive_itl_p99_vs_uncapped"), None);
    // The baseline is not judged against itself.
    let c = evaluate(&base, &uncapped, &base, true);
    assert_eq!(pass_of(&c, "tokens_per_joule_vs_cap_limit"), None);
}
