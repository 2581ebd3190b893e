//! Benchmark 9, decorator pipelines against the same steps written with `add_function_step`, on
//! one `drover up` in the same run: the time per step of a chain and of a fan-out of N
//! `return x + 1` steps, the time from submit to the first step's dispatch and claim, and from
//! submit to the run's end. The Python side is `bench/decorator_pipeline.py`.

use crate::cluster::{Cluster, Env};
use anyhow::{Context, Result, bail};
use serde_json::Value;

const SCRIPT: &str = "bench/decorator_pipeline.py";

/// The two ways one pipeline is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `@PipelineDecorator.pipeline`: a driver adds the steps while it runs.
    Decorator,
    /// `PipelineController.add_function_step`: every step known at submit.
    Functions,
}

impl Way {
    fn arg(self) -> &'static str {
        match self {
            Way::Decorator => "decorator",
            Way::Functions => "functions",
        }
    }
}

/// The two shapes of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Each step takes the previous step's result.
    Chain,
    /// No step depends on another.
    Fanout,
}

impl Shape {
    fn arg(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::Fanout => "fanout",
        }
    }
}

/// The measurements of one way, one sample per run (times in ms).
#[derive(Debug, Clone, Default)]
pub struct WaySamples {
    /// First step dispatched to last step ended, divided by N, in the chains.
    pub chain_per_step: Vec<f64>,
    /// The same in the fan-outs.
    pub fanout_per_step: Vec<f64>,
    /// First to last step dispatched, divided by N - 1, in the fan-outs.
    pub fanout_dispatch_spacing: Vec<f64>,
    /// Submit to the run's end, in the chains.
    pub chain_to_end: Vec<f64>,
    /// The same in the fan-outs.
    pub fanout_to_end: Vec<f64>,
    /// Submit to the first step's dispatch (the controller publishing its job), every run.
    pub to_dispatch: Vec<f64>,
    /// Submit to the first step's claim by an agent, every run.
    pub to_claim: Vec<f64>,
    /// Submit to the driver's claim (decorator pipelines only), every run.
    pub to_driver_claim: Vec<f64>,
}

impl WaySamples {
    pub fn per_step(&self, shape: Shape) -> &[f64] {
        match shape {
            Shape::Chain => &self.chain_per_step,
            Shape::Fanout => &self.fanout_per_step,
        }
    }

    pub fn to_end(&self, shape: Shape) -> &[f64] {
        match shape {
            Shape::Chain => &self.chain_to_end,
            Shape::Fanout => &self.fanout_to_end,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DecoratorSamples {
    pub decorator: WaySamples,
    pub functions: WaySamples,
}

impl DecoratorSamples {
    pub fn way(&self, way: Way) -> &WaySamples {
        match way {
            Way::Decorator => &self.decorator,
            Way::Functions => &self.functions,
        }
    }
}

/// One run of `steps` steps written `way` in `shape`: checked, then its figures.
fn measure(c: &Cluster, way: Way, shape: Shape, steps: usize) -> Result<Value> {
    let n = steps.to_string();
    let v = c.python_json(SCRIPT, &[way.arg(), shape.arg(), &n])?;
    if v["status"] != "succeeded" {
        bail!("the {} {} run did not succeed: {v}", way.arg(), shape.arg());
    }
    let made = v["steps"].as_object().context("no steps")?;
    let expected = steps + usize::from(way == Way::Decorator);
    if made.len() != expected || made.values().any(|s| s != "succeeded") {
        bail!("expected {expected} succeeded steps: {v}");
    }
    // chain: 0 + 1 + ... N times; fan-out: the last step's input was N - 1.
    if v["last_output"].as_u64() != Some(steps as u64) {
        bail!("the last step's output should be {steps}: {v}");
    }
    eprintln!(
        "bench: 9 {} {}: {:.0} ms per step; longest wait for an agent {}, longest run {}, longest hop {}",
        way.arg(),
        shape.arg(),
        v["per_step_ms"].as_f64().unwrap_or(f64::NAN),
        v["longest_wait"],
        v["longest_run"],
        v["longest_hop"]
    );
    Ok(v)
}

fn record(s: &mut DecoratorSamples, way: Way, shape: Shape, v: &Value) -> Result<()> {
    let get = |field: &str| {
        v[field]
            .as_f64()
            .with_context(|| format!("no {field} in {v}"))
    };
    let w = match way {
        Way::Decorator => &mut s.decorator,
        Way::Functions => &mut s.functions,
    };
    let (per_step, to_end) = (get("per_step_ms")?, get("to_end_ms")?);
    match shape {
        Shape::Chain => {
            w.chain_per_step.push(per_step);
            w.chain_to_end.push(to_end);
        }
        Shape::Fanout => {
            w.fanout_per_step.push(per_step);
            w.fanout_to_end.push(to_end);
            w.fanout_dispatch_spacing.push(get("dispatch_spacing_ms")?);
        }
    }
    w.to_dispatch.push(get("to_first_dispatch_ms")?);
    w.to_claim.push(get("to_first_claim_ms")?);
    if way == Way::Decorator {
        w.to_driver_claim.push(get("to_driver_claim_ms")?);
    }
    Ok(())
}

/// `reps` repetitions of the chain and the fan-out both ways, on one `drover up` with one agent
/// of `concurrency` slots on `default` (and the drivers agent it starts by itself).
pub async fn run(
    env: &Env,
    reps: usize,
    steps: usize,
    concurrency: usize,
) -> Result<DecoratorSamples> {
    let mut c = Cluster::new(env)?;
    c.uses_queue("drivers");
    let result = runs(&mut c, reps, steps, concurrency).await;
    c.shutdown().await;
    result
}

async fn runs(
    c: &mut Cluster,
    reps: usize,
    steps: usize,
    concurrency: usize,
) -> Result<DecoratorSamples> {
    let slots = concurrency.to_string();
    c.start_controller(
        "up",
        &[
            "up",
            "--agents",
            "1",
            "--concurrency",
            &slots,
            "--python-env",
            "venv",
        ],
    )
    .await?;
    // Warm-up, untimed: builds the step environment and loads both ways' code once.
    for way in [Way::Decorator, Way::Functions] {
        tokio::task::block_in_place(|| measure(c, way, Shape::Chain, 2))?;
    }
    let mut s = DecoratorSamples::default();
    for rep in 0..reps {
        // Alternate which way goes first, so neither always follows the other.
        let ways = if rep % 2 == 0 {
            [Way::Decorator, Way::Functions]
        } else {
            [Way::Functions, Way::Decorator]
        };
        for shape in [Shape::Chain, Shape::Fanout] {
            for way in ways {
                let v = tokio::task::block_in_place(|| measure(c, way, shape, steps))?;
                record(&mut s, way, shape, &v)?;
            }
        }
    }
    Ok(s)
}
