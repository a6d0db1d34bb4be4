//! The given/when/then helper of the unit tests.

use crate::Aggregate;

/// Starts a scenario from the events already in the stream.
pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given {
        state: crate::fold(A::default(), &events),
    }
}

pub(crate) struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    pub(crate) fn when(self, command: impl Into<A::Command>) -> Then<A> {
        let result = self.state.decide(&command.into());
        Then {
            state: self.state,
            result,
        }
    }
}

pub(crate) struct Then<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A>
where
    A::Event: PartialEq,
    A::Error: PartialEq,
{
    /// Asserts the events, and returns the state after applying them.
    pub(crate) fn then_events(self, expected: Vec<A::Event>) -> A {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected);
                crate::fold(self.state, &events)
            }
            Err(error) => panic!("expected events {expected:?}, got error: {error}"),
        }
    }

    /// Asserts the refusal (so nothing is emitted).
    pub(crate) fn then_error(self, expected: A::Error) {
        match self.result {
            Ok(events) => panic!("expected error {expected}, got events {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }
}
