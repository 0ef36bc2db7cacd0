//! Steady load through a router, bounded in time, counting answers and keeping each failure: a few
//! clients sending requests for one host one after another, or requests sent at a fixed rate.

use std::time::{Duration, Instant};

use crate::TestRouter;

pub struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    clients: Vec<tokio::task::JoinHandle<(u32, Vec<String>)>>,
}

impl Load {
    /// Starts `clients` clients; each stops by itself after `limit`, and pauses 10 ms between requests.
    pub fn start(router: &TestRouter, host: &str, clients: usize, limit: Duration) -> Load {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let clients = (0..clients)
            .map(|_| {
                let (url, host, stopped) = (format!("http://{}/", router.listen), host.to_owned(), stopped.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                    let (mut ok, mut failed) = (0, Vec::new());
                    let deadline = Instant::now() + limit;
                    while !*stopped.borrow() && Instant::now() < deadline {
                        match http.get(&url).header("host", &host).send().await {
                            Ok(r) if r.status() == 200 => ok += 1,
                            Ok(r) => failed.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default().trim())),
                            Err(e) => failed.push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Sends `rate` requests per second to `url` (with `host` as the Host header) until stopped or
    /// `limit` passes. Each request goes on its own, so a slow answer does not slow the pace.
    pub fn paced(url: String, host: &str, rate: usize, limit: Duration) -> Load {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let host = host.to_owned();
        let pacer = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let deadline = Instant::now() + limit;
            let mut inflight = Vec::new();
            while !*stopped.borrow() && Instant::now() < deadline {
                tick.tick().await;
                let request = http.get(&url).header("host", &host).send();
                inflight.push(tokio::spawn(async move {
                    match request.await {
                        Ok(r) if r.status() == 200 => Ok(()),
                        Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default().trim())),
                        Err(e) => Err(e.to_string()),
                    }
                }));
            }
            let (mut ok, mut failed) = (0, Vec::new());
            for f in inflight {
                match f.await.unwrap() {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        });
        Load { stop, clients: vec![pacer] }
    }

    /// Stops the clients: how many requests were answered 200, and every failure.
    pub async fn stop(self) -> (u32, Vec<String>) {
        let _ = self.stop.send(true);
        let (mut ok, mut failed) = (0, Vec::new());
        for c in self.clients {
            let (o, f) = c.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}
