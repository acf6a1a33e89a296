//! The pod watch (label `kh-run-uuid`, the watched namespaces): what ends a run that does not
//! report, and what retention counts.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio::sync::watch;
use tracing::error;

use super::{run_of, PodRunner};
use crate::api::protocol::RUN_LABEL;
use crate::api::RunId;
use crate::kube::Namespaces;

impl PodRunner {
    /// Watches run pods in `namespaces` until `shutdown`, ending runs by what their pods do.
    pub async fn watch(self, namespaces: Namespaces, mut shutdown: watch::Receiver<bool>) {
        let apis = namespaces.apis::<Pod>(&self.client);
        let sources = apis.len();
        let streams = apis.into_iter().enumerate().map(|(i, api)| {
            watcher::watcher(api, watcher::Config::default().labels(RUN_LABEL))
                .default_backoff()
                .map(move |ev| (i, ev))
                .boxed()
        });
        let mut stream = futures::stream::select_all(streams);
        let mut relisting: Vec<Option<HashSet<RunId>>> = vec![None; sources];
        let mut synced = vec![false; sources];
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        loop {
            let item = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = sweep.tick() => { self.reap_all(); continue }
                item = stream.next() => item,
            };
            let Some((i, ev)) = item else { return };
            match ev {
                Err(e) => error!("watching check pods: {e}"),
                Ok(WatchEvent::Init) => relisting[i] = Some(HashSet::new()),
                Ok(WatchEvent::InitApply(pod)) => {
                    if let (Some(seen), Some(uuid)) = (relisting[i].as_mut(), run_of(&pod)) {
                        seen.insert(uuid);
                    }
                    self.pod_seen(pod);
                }
                Ok(WatchEvent::Apply(pod)) => self.pod_seen(pod),
                Ok(WatchEvent::Delete(pod)) => self.pod_gone(&pod),
                Ok(WatchEvent::InitDone) => {
                    let seen = relisting[i].take().unwrap_or_default();
                    synced[i] = true;
                    // Pods that went while the watch was down, in this stream's namespaces.
                    let vanished: Vec<RunId> = {
                        let mut st = self.state.lock().expect("runner lock");
                        let ns = &namespaces.0;
                        let gone: Vec<RunId> = st
                            .pods
                            .iter()
                            .filter(|(u, p)| {
                                !seen.contains(u)
                                    && (ns.is_empty()
                                        || p.namespace().as_deref() == Some(ns[i].as_str()))
                            })
                            .map(|(u, _)| *u)
                            .collect();
                        for u in &gone {
                            st.pods.remove(u);
                        }
                        st.synced = synced.iter().all(|s| *s);
                        gone
                    };
                    let tracked: Vec<RunId> = {
                        let st = self.state.lock().expect("runner lock");
                        st.runs.keys().copied().collect()
                    };
                    for uuid in vanished.into_iter().chain(tracked) {
                        self.evaluate(uuid);
                    }
                }
            }
        }
    }
}
