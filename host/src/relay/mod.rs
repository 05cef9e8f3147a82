//! Relays from the host to what runs on the nodes. [`ssh`]: the raw-TCP SSH relay
//! (`REQUEST_TUNNEL <task_id>`), splicing a client to its VPS's sshd. [`ws`]: a user's
//! WebSocket spliced to the task's runner (terminals; next file watch and port forwards).

pub mod ssh;
pub mod ws;
