//! baresip (Debian's baresip-core) as a real phone on loopback: no sound
//! card (its audio devices are `aubridge`), its `sndfile` module writing
//! what it hears to a WAV, and a run ended after a given time (`-t`).
//!
//! ```ignore
//! let phone = Baresip::start(Role::Dial("sip:1000@127.0.0.1:5060".into()), Duration::from_secs(6));
//! let heard: Vec<i16> = phone.finish().await; // what it decoded, 8 kHz
//! ```

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the phone does.
pub enum Role {
    /// Calls this URI at once.
    Dial(String),
    /// Answers every call to this user (on `Baresip::port`).
    Answer(&'static str),
}

pub struct Baresip {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it takes SIP on (UDP, 127.0.0.1).
    pub port: u16,
}

impl Baresip {
    /// Runs baresip for `length`, then it quits (hanging up).
    pub fn start(role: Role, length: Duration) -> Baresip {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            socket.local_addr().unwrap().port()
        };
        let recordings = dir.path().join("heard");
        std::fs::create_dir(&recordings).unwrap();
        let config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{port}\n\
             audio_player aubridge,phone\n\
             audio_source aubridge,phone\n\
             audio_alert aubridge,alert\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module account.so\n\
             module_app menu.so\n\
             snd_path {}\n",
            recordings.display()
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        // baresip takes calls for its accounts' users only.
        let user = match &role {
            Role::Answer(user) => user,
            Role::Dial(_) => "phone",
        };
        std::fs::write(
            dir.path().join("accounts"),
            format!("<sip:{user}@127.0.0.1>;regint=0;answermode=auto\n"),
        )
        .unwrap();
        let mut command = Command::new("baresip");
        command
            .arg("-f")
            .arg(dir.path())
            .args(["-t", &length.as_secs().to_string()]);
        if let Role::Dial(uri) = &role {
            command.args(["-e", &format!("/dial {uri}")]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("out.txt")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("err.txt")).unwrap(),
            ))
            .spawn()
            .expect("running baresip (is baresip-core installed?)");
        let phone = Baresip { child, dir, port };
        phone.until_ready();
        phone
    }

    /// Waits until it says it is ready for calls.
    fn until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = std::fs::read_to_string(self.dir.path().join("out.txt")).unwrap_or_default();
            if out.contains("baresip is ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("baresip did not start: {}", self.output());
    }

    fn output(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("out.txt"), read("err.txt"))
    }

    /// Waits for it to quit; the samples it decoded from its (last) call.
    pub async fn finish(mut self) -> Vec<i16> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "baresip did not quit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let heard: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("heard"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        let [wav] = &heard[..] else {
            panic!("one call's audio: {heard:?}\n{}", self.output());
        };
        let bytes = std::fs::read(wav).unwrap();
        bytes[44..]
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
