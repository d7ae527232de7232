//! Logging set-up (text or JSON lines through `tracing`, filtered by `RUST_LOG`) and the
//! operator's Prometheus metrics.

pub mod endpoints;

use std::io::IsTerminal as _;

use clap::ValueEnum;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, prelude::*};

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global tracing subscriber writing to standard error.
///
/// The filter comes from `RUST_LOG` and defaults to `info` for this crate and `warn` for
/// dependencies.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
}

/// Installs the global tracing subscriber as [`init`] does, writing each line through `writer`.
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,artifact_operator=info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Colour codes help only on a terminal, so files and log collectors get plain text.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(writer),
            )
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_writer(writer))
            .init(),
    }
}

// === Metrics ===

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `registry` or `artifact`.
    pub controller: &'static str,
    /// `ready`, `progressing`, `stalled`, `waiting` or `error`.
    pub result: &'static str,
}

/// Labels of the reconcile duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `registry` or `artifact`.
    pub controller: &'static str,
}

/// Labels of the push counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// `pushed`, `adopted`, `conflict` or `failed`.
    pub result: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    /// Short, stable name of the failure, such as `http_4xx` or `registry_unreachable`.
    pub kind: &'static str,
}

/// Labels of the gateway request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// HTTP status code of the response.
    pub code: u16,
    /// `sent`, `head`, `uploaded`, `unchanged`, or the reason code of a refusal such as
    /// `expired`.
    pub reason: &'static str,
}

/// Labels of the admission counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `injected`, `allowed` (nothing to do), `denied` or `invalid`.
    pub result: &'static str,
}

/// Prometheus metrics of the operator, served in the text exposition format.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    pushes: Family<PushLabels, Counter>,
    pushed_bytes: Counter,
    gateway_requests: Family<GatewayLabels, Counter>,
    gateway_bytes: Counter,
    admissions: Family<AdmissionLabels, Counter>,
    admission_duration: Histogram,
    reconcile_duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
}

/// Buckets of the reconcile duration: from 5 ms to about 80 s, since a reconcile may push a
/// large JAR.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("artifact_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Finished reconciles by controller and result",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failures found by reconciles, by controller and kind",
            errors.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "artifact_pushes",
            "AppArtifact pushes by result",
            pushes.clone(),
        );
        let pushed_bytes = Counter::default();
        registry.register_with_unit(
            "artifact_pushed",
            "Bytes of JARs pushed into registries",
            Unit::Bytes,
            pushed_bytes.clone(),
        );
        let gateway_requests = Family::<GatewayLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Gateway responses by status code and reason",
            gateway_requests.clone(),
        );
        let gateway_bytes = Counter::default();
        registry.register_with_unit(
            "gateway_sent",
            "Bytes of artifacts the gateway sent",
            Unit::Bytes,
            gateway_bytes.clone(),
        );
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Pod admission reviews answered by the webhook, by result",
            admissions.clone(),
        );
        // From 0.25 ms to about 4 s: an admission is mostly a cache read and one HMAC.
        let admission_duration = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        registry.register_with_unit(
            "admission_duration",
            "Time to answer a pod admission review",
            Unit::Seconds,
            admission_duration.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                reconcile_histogram,
            );
        registry.register_with_unit(
            "reconcile_duration",
            "Time a reconcile took, by controller",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            pushes,
            pushed_bytes,
            gateway_requests,
            gateway_bytes,
            admissions,
            admission_duration,
            reconcile_duration,
        }
    }
}

impl Metrics {
    /// Counts one finished reconcile.
    pub fn record_reconcile(&self, controller: &'static str, result: &'static str) {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
    }

    /// Records how long one reconcile took.
    pub fn record_reconcile_duration(
        &self,
        controller: &'static str,
        duration: std::time::Duration,
    ) {
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(duration.as_secs_f64());
    }

    /// Counts one failure of a reconcile.
    pub fn record_error(&self, controller: &'static str, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, kind })
            .inc();
    }

    /// Counts one push attempt, and its bytes when it uploaded content.
    pub fn record_push(&self, result: &'static str, bytes: u64) {
        self.pushes.get_or_create(&PushLabels { result }).inc();
        self.pushed_bytes.inc_by(bytes);
    }

    /// Counts one gateway response.
    pub fn record_gateway(&self, code: u16, reason: &'static str) {
        self.gateway_requests
            .get_or_create(&GatewayLabels { code, reason })
            .inc();
    }

    /// Counts bytes the gateway sent.
    pub fn record_gateway_bytes(&self, bytes: u64) {
        self.gateway_bytes.inc_by(bytes);
    }

    /// Counts one admission review that got a response, and its duration.
    pub fn record_admission(&self, result: &'static str, duration: std::time::Duration) {
        self.admissions
            .get_or_create(&AdmissionLabels { result })
            .inc();
        self.admission_duration.observe(duration.as_secs_f64());
    }

    /// Returns every metric in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
