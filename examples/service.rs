//! A service handler: one pipeline definition, built once, shared by the threads that serve
//! requests; each request is one run of it, with a time limit of its own.
//!
//! ```text
//! cargo run --release --example service
//! ```
//!
//! A request asks for quotes on a list of product ids. The pipeline looks every id up in a
//! slow backend (a stand-in for an HTTP call, up to 32 at once per request) and prices it.
//! Eight threads serve 40 requests; every tenth asks for a product whose lookup takes far
//! longer than its deadline, and gets a `504` instead of waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pipework::prelude::*;
use pipework::{Error, ErrorKind};

/// A product id whose lookup is slow: the backend is having a bad day.
pub const SLOW_PRODUCT: u32 = 666;

/// A quote for one product.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub product: u32,
    pub cents: u64,
}

/// What a request gets back.
#[derive(Debug, PartialEq)]
pub enum Response {
    /// 200: the quotes, in no particular order.
    Ok(Vec<Quote>),
    /// 504: the request's time ran out.
    Timeout,
    /// 500: anything else.
    Failed(String),
}

/// The service: its pipeline, built once at start-up and shared by every request thread.
pub struct Service {
    pipeline: Pipeline<'static, u32, Quote>,
    /// Backend calls made, over all requests.
    pub lookups: Arc<AtomicU32>,
}

impl Service {
    /// Builds the pipeline.
    #[must_use]
    pub fn new() -> Self {
        let lookups = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&lookups);
        let pipeline = Pipeline::new()
            .stage(
                "lookup",
                Dynamic::new(
                    32,
                    with_context(move |product: u32, cx| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        // The call is given what is left of the request's time, as a client's
                        // timeout would be; cancellation (a failed sibling, the deadline) cuts
                        // it short.
                        let latency = backend_latency(product);
                        let budget = cx.remaining().unwrap_or(latency);
                        cx.sleep(latency.min(budget))
                            .map(|()| (product, u64::from(product) * 7))
                    }),
                ),
            )
            .stage(
                "price",
                Fixed::new(
                    2,
                    map(|(product, base): (u32, u64)| Quote {
                        product,
                        cents: base * 110 / 100,
                    }),
                ),
            );
        Service { pipeline, lookups }
    }

    /// Serves one request: quotes for `products`, within `timeout`.
    #[must_use]
    pub fn handle(&self, products: Vec<u32>, timeout: Duration) -> Response {
        match self.pipeline.job().timeout(timeout).collect(products) {
            Ok((quotes, _report)) => Response::Ok(quotes),
            Err(e) => response_for(&e),
        }
    }
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

/// The response for a failed run.
fn response_for(e: &Error) -> Response {
    match e.kind() {
        ErrorKind::Deadline { .. } => Response::Timeout,
        _ => Response::Failed(format!("{e:#}")),
    }
}

/// How long the backend takes for `product`.
fn backend_latency(product: u32) -> Duration {
    if product == SLOW_PRODUCT {
        Duration::from_secs(30)
    } else {
        Duration::from_millis(5 + u64::from(product % 10))
    }
}

fn main() {
    let service = Service::new();
    let next = AtomicU32::new(0);
    let started = Instant::now();
    let (ok, timeouts, failed) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut counts = (0, 0, 0);
                    loop {
                        let request = next.fetch_add(1, Ordering::Relaxed);
                        if request >= 40 {
                            return counts;
                        }
                        let mut products: Vec<u32> = (0..20).map(|i| request * 100 + i).collect();
                        if request % 10 == 9 {
                            products.push(SLOW_PRODUCT);
                        }
                        let asked = Instant::now();
                        let response = service.handle(products, Duration::from_millis(250));
                        let took = asked.elapsed();
                        match response {
                            Response::Ok(quotes) => {
                                counts.0 += 1;
                                println!(
                                    "request {request:2}: 200, {} quotes in {took:.0?}",
                                    quotes.len()
                                );
                            }
                            Response::Timeout => {
                                counts.1 += 1;
                                println!("request {request:2}: 504 after {took:.0?}");
                            }
                            Response::Failed(why) => {
                                counts.2 += 1;
                                println!("request {request:2}: 500: {why}");
                            }
                        }
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a request thread panicked"))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    });
    println!(
        "{ok} ok, {timeouts} timed out, {failed} failed in {:.0?}; {} backend calls",
        started.elapsed(),
        service.lookups.load(Ordering::Relaxed)
    );
}
