//! Every bound on what a peer on the network can make a daemon hold or do: connections,
//! requests in flight, table rows, subscriptions, processes, sweeps, rates. One place, so the
//! README's list and the code cannot drift apart. At a bound the daemon answers that request
//! with an error naming the bound and keeps serving everyone else.
