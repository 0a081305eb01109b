// anygate patch: the task pipe between the two halves of an HTTP/1 proxy session.
//
// `proxy_1to1` runs the downstream half and the upstream half of a request as two futures
// joined in one task, and passes `HttpTask`s between them through two bounded channels. It
// used tokio's `mpsc` channel: built for many senders on many threads, it allocates a
// 32-slot block besides the channel, and every send, reserve and receive goes through its
// semaphore and block list, about 3,000 instructions per request for the two channels. This
// pipe has one sender and one receiver, holds at most `TASK_BUFFER_SIZE` tasks inline in its
// one allocation, and takes an uncontended lock for each operation.
//
// It keeps the part of tokio's API that `proxy_h1` uses, with the same meaning:
// - `recv` yields the tasks in order, then `None` once the sender is gone; it is cancel safe.
// - `reserve` waits for a free slot and `try_reserve` does not; a `Permit` holds its slot
//   until it sends or is dropped. Both fail once the receiver is gone (`is_closed`).
// - `send` is `reserve` then `Permit::send`; it hands the task back when the receiver is gone.
// - A task sent after the receiver is gone is dropped; tasks still queued when the receiver
//   goes are dropped with it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

const CAP: usize = super::TASK_BUFFER_SIZE;

struct State<T> {
    /// A ring of `len` tasks starting at `head`.
    buf: [Option<T>; CAP],
    head: usize,
    len: usize,
    /// Slots promised to permits not yet used.
    reserved: usize,
    tx_closed: bool,
    rx_closed: bool,
    /// The receiver waiting for a task.
    rx_waker: Option<Waker>,
    /// The sender waiting for a slot.
    tx_waker: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot when one is free; `Err(closed)` otherwise.
    fn take_slot(&self, state: &mut State<T>) -> Result<(), bool> {
        if state.rx_closed {
            Err(true)
        } else if state.len + state.reserved < CAP {
            state.reserved += 1;
            Ok(())
        } else {
            Err(false)
        }
    }
}

fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// A pipe holding up to `TASK_BUFFER_SIZE` tasks.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: std::array::from_fn(|_| None),
            head: 0,
            len: 0,
            reserved: 0,
            tx_closed: false,
            rx_closed: false,
            rx_waker: None,
            tx_waker: None,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The task could not be sent: the receiver is gone. The task is handed back.
pub(crate) struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task pipe closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why `try_reserve` gave no permit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    Full,
    Closed,
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full => "task pipe full",
            TrySendError::Closed => "task pipe closed",
        })
    }
}

impl std::error::Error for TrySendError {}

pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Waits for a slot, then queues `value`.
    pub(crate) async fn send(&self, value: T) -> Result<(), SendError<T>> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(value);
                Ok(())
            }
            Err(_) => Err(SendError(value)),
        }
    }

    /// Waits for a slot and holds it.
    pub(crate) fn reserve(&self) -> Reserve<'_, T> {
        Reserve {
            shared: &self.shared,
        }
    }

    /// A slot, if one is free now.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError> {
        let mut state = self.shared.lock();
        match self.shared.take_slot(&mut state) {
            Ok(()) => Ok(Permit {
                shared: &self.shared,
            }),
            Err(true) => Err(TrySendError::Closed),
            Err(false) => Err(TrySendError::Full),
        }
    }

    /// Whether the receiver is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().rx_closed
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.tx_closed = true;
            state.rx_waker.take()
        };
        wake(waker);
    }
}

/// The future of [`Sender::reserve`]. Holds nothing until it is ready: cancel safe.
pub(crate) struct Reserve<'a, T> {
    shared: &'a Shared<T>,
}

impl<'a, T> Future for Reserve<'a, T> {
    type Output = Result<Permit<'a, T>, SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = self.shared;
        let mut state = shared.lock();
        match shared.take_slot(&mut state) {
            Ok(()) => Poll::Ready(Ok(Permit { shared })),
            Err(true) => Poll::Ready(Err(SendError(()))),
            Err(false) => {
                park(&mut state.tx_waker, cx);
                Poll::Pending
            }
        }
    }
}

/// A slot held for one task.
pub(crate) struct Permit<'a, T> {
    shared: &'a Shared<T>,
}

impl<T> Permit<'_, T> {
    /// Queues `value` in the held slot (drops it if the receiver is gone).
    pub(crate) fn send(self, value: T) {
        let shared = self.shared;
        // The slot is used here, not given back by `Drop`.
        std::mem::forget(self);
        let (waker, dropped) = {
            let mut state = shared.lock();
            state.reserved -= 1;
            let dropped = if state.rx_closed {
                Some(value)
            } else {
                let at = (state.head + state.len) % CAP;
                state.buf[at] = Some(value);
                state.len += 1;
                None
            };
            (state.rx_waker.take(), dropped)
        };
        drop(dropped);
        wake(waker);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.reserved -= 1;
            state.tx_waker.take()
        };
        wake(waker);
    }
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next task, or `None` once the sender is gone and nothing is queued.
    pub(crate) fn recv(&mut self) -> Recv<'_, T> {
        Recv {
            shared: &self.shared,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (waker, queued) = {
            let mut state = self.shared.lock();
            state.rx_closed = true;
            state.len = 0;
            let queued: Vec<T> = state.buf.iter_mut().filter_map(Option::take).collect();
            (state.tx_waker.take(), queued)
        };
        drop(queued);
        wake(waker);
    }
}

/// The future of [`Receiver::recv`]. Takes a task only when it is ready: cancel safe.
pub(crate) struct Recv<'a, T> {
    shared: &'a Shared<T>,
}

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let (task, waker) = {
            let mut state = self.shared.lock();
            if state.len > 0 {
                let head = state.head;
                let task = state.buf[head].take();
                state.head = (head + 1) % CAP;
                state.len -= 1;
                (task, state.tx_waker.take())
            } else if state.tx_closed {
                return Poll::Ready(None);
            } else {
                park(&mut state.rx_waker, cx);
                return Poll::Pending;
            }
        };
        wake(waker);
        Poll::Ready(task)
    }
}

// These tests also run with the workspace's: `gateway/src/lib.rs` compiles this file in a
// test-only module (the vendored crates' own tests are not run).
#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `future` to its end, or fails: a lost wake-up hangs a join forever.
    async fn bounded<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), future)
            .await
            .expect("a waiting side was never woken")
    }

    /// The future's output if it is ready at its first poll.
    fn now<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn tasks_arrive_in_order_then_none_after_the_sender_goes() {
        let (tx, mut rx) = channel::<u32>();
        for i in 0..CAP as u32 {
            tx.send(i).await.unwrap();
        }
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full)));
        assert!(now(tx.reserve()).is_none(), "full: reserve waits");
        for i in 0..CAP as u32 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert!(now(rx.recv()).is_none(), "empty: recv waits");
        let permit = tx.try_reserve().unwrap();
        permit.send(7);
        drop(tx);
        assert_eq!(rx.recv().await, Some(7));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn an_unused_permit_gives_its_slot_back() {
        let (tx, mut rx) = channel::<u32>();
        let permits: Vec<_> = (0..CAP).map(|_| tx.try_reserve().unwrap()).collect();
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full)));
        drop(permits);
        tx.send(1).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
    }

    #[tokio::test]
    async fn the_ring_wraps() {
        let (tx, mut rx) = channel::<u32>();
        for i in 0..(5 * CAP as u32) {
            tx.send(i).await.unwrap();
            if i % 3 == 2 {
                assert_eq!(rx.recv().await, Some(i - 2));
                assert_eq!(rx.recv().await, Some(i - 1));
                assert_eq!(rx.recv().await, Some(i));
            }
        }
    }

    // The waiting side runs in a task of its own: in one task, any wake-up re-polls every
    // joined future and would hide a lost one.
    #[tokio::test]
    async fn a_waiting_sender_is_woken_by_a_receive() {
        let (tx, mut rx) = channel::<u32>();
        for i in 0..CAP as u32 {
            tx.send(i).await.unwrap();
        }
        let sender = tokio::spawn(async move { tx.send(99).await.is_ok() });
        tokio::task::yield_now().await; // the sender finds the pipe full and waits
        assert!(!sender.is_finished());
        assert_eq!(rx.recv().await, Some(0));
        assert!(bounded(sender).await.unwrap());
    }

    #[tokio::test]
    async fn a_waiting_sender_is_woken_by_the_receiver_going() {
        let (tx, rx) = channel::<u32>();
        for i in 0..CAP as u32 {
            tx.send(i).await.unwrap();
        }
        let sender = tokio::spawn(async move {
            let sent = tx.send(100).await;
            (
                sent.map_err(|e| e.0),
                tx.is_closed(),
                tx.try_reserve().err(),
            )
        });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        drop(rx);
        let (sent, closed, try_reserve) = bounded(sender).await.unwrap();
        assert_eq!(sent, Err(100));
        assert!(closed);
        assert_eq!(try_reserve, Some(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, mut rx) = channel::<u32>();
        let receiver = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await; // the receiver finds the pipe empty and waits
        assert!(!receiver.is_finished());
        tx.send(5).await.unwrap();
        assert_eq!(bounded(receiver).await.unwrap(), Some(5));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_the_sender_going() {
        let (tx, mut rx) = channel::<u32>();
        let receiver = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        assert!(!receiver.is_finished());
        drop(tx);
        assert_eq!(bounded(receiver).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_dropped_permit_wakes_a_waiting_sender() {
        let (tx, _rx) = channel::<u32>();
        let tx = Arc::new(tx);
        let permits: Vec<Permit<'_, u32>> = (0..CAP).map(|_| tx.try_reserve().unwrap()).collect();
        let waiting = tx.clone();
        let sender = tokio::spawn(async move { waiting.send(1).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        drop(permits);
        assert!(bounded(sender).await.unwrap());
    }

    #[test]
    fn queued_tasks_go_with_the_receiver() {
        let marker = Arc::new(());
        let (tx, rx) = channel::<Arc<()>>();
        tx.try_reserve().unwrap().send(marker.clone());
        assert_eq!(Arc::strong_count(&marker), 2);
        drop(rx);
        assert_eq!(Arc::strong_count(&marker), 1);
        // Sent after the receiver is gone: dropped, not kept.
        assert!(tx.try_reserve().is_err());
    }
}
