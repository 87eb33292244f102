//! A TCP delay line for benchmarks on kernels without `tc netem`: every
//! byte is forwarded `DELAY_MS` after it arrived, in both directions, with
//! no limit on bandwidth (a chunk waits only for its own due time, never
//! for the chunk before it to be acknowledged). Two delay lines of 10 ms
//! make a 20 ms round trip.
//!
//!   cargo run --release --example delayline -- LISTEN UPSTREAM DELAY_MS
//!   delayline 10.200.0.2:9443 127.0.0.1:8443 10

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, ms] = &args[..] else {
        eprintln!("usage: delayline LISTEN UPSTREAM DELAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(ms.parse().expect("DELAY_MS is a number"));
    let listener = TcpListener::bind(listen).expect("listening");
    for client in listener.incoming().flatten() {
        let upstream = upstream.clone();
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(&upstream) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = std::thread::spawn(move || pump(client, server, delay));
            pump(s2, c2, delay);
            let _ = up.join();
        });
    }
}
