//! Command handlers through the event store on both backends.
