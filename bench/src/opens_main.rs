//! `switchyard-opens`: stream opens per second — long polls that answer at once
//! (`timeout=0`), each one a whole admission (query, origin, token, subscription), over
//! `--connections` kept-alive connections for `--seconds`. With `--secret`, each request
//! carries a fresh-looking HS256 token (signed once) for its topic.
//!
//!   switchyard-opens --url http://127.0.0.1:3000 --topic notifications/ada --secret "$S"

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use switchyard_bench::Error;
use switchyard_bench::net::{Target, connect, http1};

/// Stream opens per second against a switchyard server.
#[derive(Parser, Debug)]
#[command(name = "switchyard-opens")]
struct Args {
    /// The server's base URL.
    #[arg(long)]
    url: String,
    /// The topic each poll follows.
    #[arg(long, default_value = "projects")]
    topic: String,
    /// HS256 secret: send `Authorization: Bearer <token for --topic>` with every poll.
    #[arg(long)]
    secret: Option<String>,
    /// Kept-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("switchyard-opens: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<String, Error> {
    let target = Target::resolve(&args.url).await?;
    let token = args.secret.as_deref().map(|secret| {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let claims = serde_json::json!({"exp": exp, "topics": [args.topic], "sub": "bench"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
    });
    let token = token
        .transpose()
        .map_err(|e| Error::new(format!("signing the token: {e}")))?;
    let path = format!("{}/v1/poll?topics={}&timeout=0", target.prefix, args.topic);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (target, path, token) = (target.clone(), path.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let stream = connect(target.addr, None)
                .await
                .map_err(|e| Error::new(format!("connect: {e}")))?;
            let (mut send, conn) = http1::<Empty<Bytes>>(stream).await?;
            tokio::spawn(conn);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut req = Request::get(path.as_str()).header("host", target.authority.as_str());
                if let Some(t) = &token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let req = req
                    .body(Empty::new())
                    .map_err(|e| Error::new(format!("request: {e}")))?;
                let resp = send
                    .send_request(req)
                    .await
                    .map_err(|e| Error::new(format!("poll: {e}")))?;
                if resp.status() != 200 {
                    return Err(Error::new(format!("poll answered {}", resp.status())));
                }
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| Error::new(format!("body: {e}")))?;
                n += 1;
            }
            Ok::<u64, Error>(n)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| Error::new(format!("task: {e}")))??;
    }
    Ok(format!(
        "{{\"opens\":{total},\"seconds\":{},\"opens_per_s\":{:.0},\"token\":{}}}",
        args.seconds,
        total as f64 / args.seconds as f64,
        token.is_some()
    ))
}
