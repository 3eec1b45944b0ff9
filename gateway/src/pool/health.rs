//! The health prober: every worker of a pool gets a real Flight SQL call (GetFlightInfo of
//! `CommandGetSqlInfo` for the server name) on an interval. Ejected workers are probed once
//! their back-off is over, and re-admitted when the probe succeeds.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::FlightDescriptor;
use arrow_flight::sql::{CommandGetSqlInfo, ProstMessageExt};
use prost::Message;
use tokio::task::JoinHandle;

use super::{Pool, Worker};

/// Probes `worker` once; `Err` carries the reason.
async fn probe(pool: &Pool, worker: &Arc<Worker>) -> Result<(), String> {
    let command = CommandGetSqlInfo { info: vec![0] }.as_any().encode_to_vec();
    let mut client = worker.client();
    let call = client.get_flight_info(FlightDescriptor::new_cmd(command));
    match tokio::time::timeout(pool.policy().timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if !super::is_transport(&status) => {
            // The worker answered: it is alive even if it dislikes the command.
            Ok(())
        }
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no answer within {:?}", pool.policy().timeout)),
    }
}

/// Probes every worker of `pool` on its interval until the task is aborted.
pub fn spawn_prober(pool: Arc<Pool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(pool.policy().interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = Instant::now();
            let due: Vec<Arc<Worker>> = pool.workers().iter().filter(|w| w.probe_due(now)).cloned().collect();
            let results = futures::future::join_all(due.iter().map(|w| probe(&pool, w))).await;
            for (worker, result) in due.iter().zip(results) {
                match result {
                    Ok(()) => worker.record_success(true),
                    Err(e) => {
                        let may_eject = pool.may_eject(worker);
                        worker.record_failure(&e, true, pool.policy(), may_eject);
                    }
                }
            }
        }
    })
}
