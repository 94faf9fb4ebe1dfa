//! deepguard-eval: the evaluation harness.
//!
//! - [`scenario`] reads a benchmark folder (SVEN / CodeGuard+ layout);
//! - [`gen`] generates and [`cut`] cuts completions at the end of the function;
//! - [`sandbox`] runs untrusted programs (bubblewrap namespaces + rlimits);
//! - [`functional`] runs the scenarios' unit tests on the completed programs;
//! - [`judge`] decides security with pluggable backends: static tools, CodeQL, the sanitizer
//!   run and the exploit tests (one module each under `judge/`);
//! - [`metrics`] computes pass@1, sec@1_pass, sec-pass@1 and the security rate;
//! - [`pipeline`] runs the stages (generate, test, judge, report) for a method, resumably;
//! - [`rerank`] keeps the most secure of k candidates per sample, and [`repair`] checks each
//!   kept sample with the static tools and regenerates flagged code with the findings and
//!   [`remedies`] (methods past the papers);
//! - [`builds`] checks that code builds (the repair loop's check of what it regenerates);
//! - [`split`] parts a benchmark's scenarios into a selection and a confirmation split by CWE;
//! - [`diagnose`] asks each method what it would do to the benchmark's prompts;
//! - [`compare`] pairs methods against a baseline with bootstrap intervals over scenarios;
//! - [`report`] writes markdown, JSON and HTML; [`store`] keeps everything resumable (jsonl);
//! - [`shard`] splits a run over N processes (Slurm arrays, Kubernetes Indexed Jobs) and
//!   [`merge`] joins their folders into one run.

pub mod builds;
pub mod calibrate;
pub mod compare;
pub mod cut;
pub mod diagnose;
pub mod functional;
pub mod gen;
pub mod judge;
pub mod merge;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod remedies;
pub mod repair;
pub mod rerank;
pub mod sandbox;
pub mod scenario;
pub mod shard;
pub mod split;
pub mod store;
