//! The deployment queue on SQS FIFO: one message group per service keeps its deployments in
//! order, and the deployment id as deduplication id makes a repeated send harmless.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use autodeploy_core::deployment::{DeploymentRequest, batch_waves};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::describe_sdk_error;
use crate::store::{DeploymentQueue, QueueError};

/// SQS takes at most ten messages per batch.
const BATCH: usize = 10;
/// Batches of one request in flight at once. A push matching 1,000 services makes 100
/// batches; ten at a time send them in ten round trips rather than a hundred, well under
/// what a high-throughput FIFO queue (the template's) takes per second.
const CONCURRENT_BATCHES: usize = 10;
/// Attempts per message before its failure is reported (the caller keeps it `PENDING`).
const ATTEMPTS: u32 = 3;
/// How long one batch may take, the SDK's retries included. The SDK sets no timeout but the
/// connect timeout, so a queue that accepts a connection and never answers would hold the
/// request until the function's own timeout (8 s for the push webhook), and the caller would
/// get no 202. A batch that times out stops the send (see [`SqsQueue::send`]), so a queue
/// that hangs costs a request this long at most; what was not sent stays `PENDING`.
const BATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one [`DeploymentQueue::send`] may keep starting batches. A queue that answers,
/// but slowly (throttling, retries), must not hold a push that matches hundreds of services
/// past the function's timeout: batches not started by then stay `PENDING` for the relay.
const SEND_BUDGET: Duration = Duration::from_secs(4);

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    send_budget: Duration,
    batch_timeout: Duration,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            send_budget: SEND_BUDGET,
            batch_timeout: BATCH_TIMEOUT,
        }
    }

    /// The same queue with another budget per send than `SEND_BUDGET`.
    pub fn with_send_budget(mut self, budget: Duration) -> Self {
        self.send_budget = budget;
        self
    }

    /// The same queue with another time one batch may take than `BATCH_TIMEOUT`.
    pub fn with_batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Send up to ten requests, retrying the entries of a partly failed batch that failed for
    /// a reason of SQS's own. Entries are resent in their order, so one service's deployments
    /// keep theirs unless an earlier one failed alone. The flag is false when SQS did not
    /// answer at all (the call failed after the SDK's retries).
    async fn send_batch(&self, requests: &[DeploymentRequest]) -> (Vec<Result<(), QueueError>>, bool) {
        let mut answered = true;
        let mut results: Vec<Option<Result<(), QueueError>>> = Vec::with_capacity(requests.len());
        let mut entries: Vec<Option<SendMessageBatchRequestEntry>> = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            match entry(index, request) {
                Ok(entry) => {
                    results.push(None);
                    entries.push(Some(entry));
                }
                Err(err) => {
                    results.push(Some(Err(err)));
                    entries.push(None);
                }
            }
        }

        for attempt in 1..=ATTEMPTS {
            let pending: Vec<SendMessageBatchRequestEntry> = entries
                .iter()
                .zip(&results)
                .filter(|(_, result)| result.is_none())
                .filter_map(|(entry, _)| entry.clone())
                .collect();
            if pending.is_empty() {
                break;
            }
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 2))).await;
            }
            let last = attempt == ATTEMPTS;
            let sent = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(pending))
                .send()
                .await;
            match sent {
                Ok(out) => {
                    for ok in out.successful() {
                        if let Some(slot) = slot(&mut results, ok.id()) {
                            *slot = Some(Ok(()));
                        }
                    }
                    for failed in out.failed() {
                        // A sender fault (a message SQS will never take) is not worth retrying.
                        if (last || failed.sender_fault())
                            && let Some(slot) = slot(&mut results, failed.id())
                        {
                            *slot = Some(Err(QueueError(format!(
                                "{}: {}",
                                failed.code(),
                                failed.message().unwrap_or("no message")
                            ))));
                        }
                    }
                }
                // The SDK has already retried what a whole call can retry; trying again here
                // would only hold the request longer while the queue is down.
                Err(err) => {
                    answered = false;
                    let message = describe_sdk_error("send_message_batch", &err);
                    for slot in results.iter_mut().filter(|r| r.is_none()) {
                        *slot = Some(Err(QueueError(message.clone())));
                    }
                }
            }
        }

        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(QueueError("SQS did not report on this message".to_owned()))))
            .collect();
        (results, answered)
    }

    /// One batch of [`DeploymentQueue::send`], unless SQS has stopped being tried (`down`,
    /// which a failure of this batch sets) or the send's time is up.
    async fn send_one_batch(
        &self,
        batch: &[DeploymentRequest],
        down: &OnceLock<String>,
        deadline: Instant,
    ) -> Vec<Result<(), QueueError>> {
        if Instant::now() >= deadline {
            let _ = down.set(format!("the request spent its {:?} for sending", self.send_budget));
        }
        if let Some(reason) = down.get() {
            return batch
                .iter()
                .map(|_| Err(QueueError(format!("not sent: {reason}"))))
                .collect();
        }
        match tokio::time::timeout(self.batch_timeout, self.send_batch(batch)).await {
            Ok((sent, answered)) => {
                if !answered {
                    let _ = down.set("SQS failed another batch of this request".to_owned());
                }
                sent
            }
            Err(_) => {
                let reason = format!("SQS did not answer within {:?}", self.batch_timeout);
                let _ = down.set(reason.clone());
                batch.iter().map(|_| Err(QueueError(reason.clone()))).collect()
            }
        }
    }
}

#[async_trait]
impl DeploymentQueue for SqsQueue {
    async fn send(&self, requests: &[DeploymentRequest]) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Option<Result<(), QueueError>>> = (0..requests.len()).map(|_| None).collect();
        // Why SQS stopped being tried, once a batch failed whole or went unanswered.
        let down: OnceLock<String> = OnceLock::new();
        let deadline = Instant::now() + self.send_budget;
        // Batches of one wave hold no service twice, so they go at once; a service's later
        // batch waits in a later wave (see `batch_waves`). Once SQS fails a whole batch (or does
        // not answer in time), no further batch is started: sent now, a later wave would
        // overtake the failed batch's deployments of the same services, which the relay sends
        // later, and a queue that is down does not cost the request one timeout per batch.
        for wave in batch_waves(requests, BATCH) {
            if down.get().is_some() {
                break;
            }
            let sent: Vec<(Range<usize>, Vec<Result<(), QueueError>>)> = futures::stream::iter(wave)
                .map(|range| {
                    self.send_one_batch(&requests[range.clone()], &down, deadline)
                        .map(move |sent| (range, sent))
                })
                .buffer_unordered(CONCURRENT_BATCHES)
                .collect()
                .await;
            for (range, sent) in sent {
                for (slot, result) in results[range].iter_mut().zip(sent) {
                    *slot = Some(result);
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    let reason = down
                        .get()
                        .map_or("SQS failed another batch of this request", String::as_str);
                    Err(QueueError(format!("not sent: {reason}")))
                })
            })
            .collect()
    }
}

/// The batch entry for `request`, identified in its batch by its index.
fn entry(index: usize, request: &DeploymentRequest) -> Result<SendMessageBatchRequestEntry, QueueError> {
    let body = serde_json::to_string(request).map_err(|e| QueueError(format!("encoding the request: {e}")))?;
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body)
        .message_group_id(request.message_group())
        .message_deduplication_id(&request.deployment_id)
        .build()
        .map_err(|e| QueueError(format!("building the message: {e}")))
}

/// The result slot of the batch entry `id`, if SQS named one of ours.
fn slot<'a>(
    results: &'a mut [Option<Result<(), QueueError>>],
    id: &str,
) -> Option<&'a mut Option<Result<(), QueueError>>> {
    id.parse::<usize>().ok().and_then(|index| results.get_mut(index))
}
