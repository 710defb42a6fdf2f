//! A server that follows a script, for replies no well-behaved server
//! sends. It serves one connection on 127.0.0.1 and ends by itself.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Serves `script`: for each step, waits for a line starting with the
/// step's command (none for the greeting), then writes its reply. After
/// the script it reads until the client closes.
pub(crate) fn start(script: &[(&str, &str)]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let script: Vec<(String, String)> = script
        .iter()
        .map(|(c, r)| ((*c).to_owned(), (*r).to_owned()))
        .collect();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut line = String::new();
        for (command, reply) in script {
            if !command.is_empty() {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || !line.starts_with(&command) {
                    return;
                }
            }
            if writer.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            line.clear();
        }
    });
    addr
}
