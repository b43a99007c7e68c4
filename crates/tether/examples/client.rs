//! A blocking TLS client over TCP: verifies the server against a CA file, sends a line, prints
//! the reply.
//!
//! Run: `cargo run -p tether --example client -- HOST:PORT CA.pem [TEXT]`
//! (for instance against `openssl s_server -accept 127.0.0.1:4433 -cert ... -key ... -rev`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(ca)) = (args.next(), args.next()) else {
        eprintln!("usage: client HOST:PORT CA.pem [TEXT]");
        std::process::exit(2);
    };
    let text = args.next().unwrap_or_else(|| "hello".into());

    let trust = tether::Trust::from_pem(&std::fs::read(&ca)?)?;
    let config = tether::ClientConfig::builder(trust).build()?;
    let mut socket = tether::net::connect(&target, &config)?;
    println!(
        "connected with {:?} {:?}",
        socket.session().version(),
        socket.session().cipher_suite()
    );
    socket.write_all(format!("{text}\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = socket.read(&mut buf)?;
    println!("reply: {}", String::from_utf8_lossy(&buf[..n]).trim_end());
    socket.close()?;
    Ok(())
}
