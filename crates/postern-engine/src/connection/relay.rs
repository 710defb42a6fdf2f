//! A delivery loop's relay: the one address its connections report to.
//! It passes what they said over one turn of the loop to the scheduler as
//! one message, and gives them the scheduler's answers, which come the
//! same way. A wake-up of another loop is a write to its eventfd; this
//! makes it one per turn of the sending loop instead of one per message
//! each way.

use actix::prelude::*;

use crate::message::Batch;
use crate::messages::{Answers, Report, Reports, Returned};

/// One per delivery loop, started by the scheduler.
pub(crate) struct Relay {
    scheduler: Recipient<Reports>,
    returned: Recipient<Returned>,
    /// This turn's reports, in the order they came.
    gathered: Vec<Report>,
}

impl Relay {
    pub(crate) fn new(scheduler: Recipient<Reports>, returned: Recipient<Returned>) -> Self {
        Self {
            scheduler,
            returned,
            gathered: Vec::new(),
        }
    }

    fn pass(&mut self) {
        let reports = std::mem::take(&mut self.gathered);
        if !reports.is_empty() {
            self.scheduler.do_send(Reports(reports));
        }
    }
}

impl Actor for Relay {
    type Context = Context<Self>;
}

impl Handler<Report> for Relay {
    type Result = ();

    /// The first report of a turn sets the passing of them all, which
    /// runs once the relay's mailbox is empty.
    fn handle(&mut self, report: Report, ctx: &mut Context<Self>) {
        if self.gathered.is_empty() {
            ctx.spawn(fut::ready(()).map(|(), relay: &mut Self, _| relay.pass()));
        }
        self.gathered.push(report);
    }
}

impl Handler<Answers> for Relay {
    type Result = ();

    /// A batch whose connection is gone goes back to the scheduler.
    fn handle(&mut self, Answers(answers): Answers, _: &mut Context<Self>) {
        let returned: Vec<Batch> = answers
            .into_iter()
            .filter_map(|(to, batches)| to.send(batches).err())
            .flatten()
            .collect();
        if !returned.is_empty() {
            self.returned.do_send(Returned(returned));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::messages::{End, WantWork};

    /// Stands in for the scheduler: says what reached it.
    struct Scheduler(mpsc::UnboundedSender<String>);

    impl Actor for Scheduler {
        type Context = Context<Self>;
    }

    impl Handler<Reports> for Scheduler {
        type Result = ();

        fn handle(&mut self, Reports(reports): Reports, _: &mut Context<Self>) {
            let kinds: Vec<String> = reports
                .iter()
                .map(|r| match r {
                    Report::Connected(id) => format!("connected {id}"),
                    Report::Want(w) => format!("want {}", w.id),
                    Report::Ended(id, _, _) => format!("ended {id}"),
                })
                .collect();
            let _ = self.0.send(kinds.join(", "));
        }
    }

    impl Handler<Returned> for Scheduler {
        type Result = ();

        fn handle(&mut self, Returned(batches): Returned, _: &mut Context<Self>) {
            let recipients: Vec<&str> = batches
                .iter()
                .flat_map(|b| b.recipients.iter().map(String::as_str))
                .collect();
            let _ = self.0.send(format!("returned {}", recipients.join(", ")));
        }
    }

    #[actix::test]
    async fn a_turns_reports_go_as_one_message_and_unclaimed_batches_come_back() {
        let (seen, mut heard) = mpsc::unbounded_channel();
        let scheduler = Scheduler(seen).start();
        let relay = Relay::new(scheduler.clone().recipient(), scheduler.recipient()).start();
        let (answer, _next) = oneshot::channel();
        relay.do_send(Report::Connected(7));
        relay.do_send(Report::Want(WantWork {
            id: 7,
            finished: Vec::new(),
            closing: false,
            room: 2,
            answer,
        }));
        relay.do_send(Report::Ended(8, End::Closed, Vec::new()));
        assert_eq!(
            heard.recv().await.as_deref(),
            Some("connected 7, want 7, ended 8")
        );

        let (waiting, next) = oneshot::channel();
        let (gone, dropped) = oneshot::channel();
        drop(dropped);
        relay.do_send(Answers(vec![
            (waiting, vec![Batch::for_test("a@x.test")]),
            (
                gone,
                vec![Batch::for_test("b@x.test"), Batch::for_test("c@x.test")],
            ),
        ]));
        let given = next.await.expect("answered");
        assert_eq!(given.len(), 1);
        assert_eq!(given[0].recipients, ["a@x.test"]);
        assert_eq!(
            heard.recv().await.as_deref(),
            Some("returned b@x.test, c@x.test")
        );
    }
}
