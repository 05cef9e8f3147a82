//! Relays from the host to what runs on the nodes. [`ssh`]: the raw-TCP SSH relay
//! (`REQUEST_TUNNEL <task_id>`), splicing a client to its VPS's sshd.

pub mod ssh;
