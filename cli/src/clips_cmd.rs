//! `panoptes clips list|get|rm`: the clips, segments and snapshots recorders stored in the
//! NATS Object Store bucket `<ns>-clips` (see [`panoptes_recorder::store`]), filtered by
//! camera, time and event kind from each object's description, without downloading videos.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use panoptes_contracts::Subjects;
use panoptes_recorder::{ClipStore, Role, StoredObject};

use crate::nats_args::NatsArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Where {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
    pub namespace: String,
}

/// Which clips a listing keeps.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this camera's.
    #[arg(long)]
    pub camera: Option<String>,
    /// Only clips that end at or after this time (Unix seconds).
    #[arg(long, value_name = "UNIX_S")]
    pub since: Option<f64>,
    /// Only clips that start before this time (Unix seconds).
    #[arg(long, value_name = "UNIX_S")]
    pub until: Option<f64>,
    /// Only clips holding an event of this kind (`zone_enter`, `line_cross`, `dwell`,
    /// `detection`, …).
    #[arg(long)]
    pub kind: Option<String>,
}

impl Filter {
    fn keeps(&self, o: &StoredObject) -> bool {
        let c = &o.clip;
        let s = |t: f64| (t * 1e9) as u64;
        self.camera.as_ref().is_none_or(|cam| &c.camera == cam)
            && self.since.is_none_or(|t| c.end_ns >= s(t))
            && self.until.is_none_or(|t| c.start_ns < s(t))
            && self
                .kind
                .as_ref()
                .is_none_or(|k| c.events.iter().any(|e| &e.kind == k))
    }
}

#[derive(Subcommand)]
pub enum ClipsCommand {
    /// One JSON line per stored clip or segment (its `clips/v1` description), oldest first.
    List {
        #[command(flatten)]
        place: Where,
        #[command(flatten)]
        filter: Filter,
    },
    /// Write a stored object (a clip's video or snapshot, by the name `list` prints) to a file,
    /// byte for byte.
    Get {
        /// The object's name, e.g. `gate/gate-1764990000000.mp4`.
        name: String,
        /// Where to write it (default: the name's last part, in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        place: Where,
    },
    /// Remove a clip: its video and snapshot (by either's name, or the clip's ID).
    Rm {
        name: String,
        #[command(flatten)]
        place: Where,
    },
}

async fn open(place: &Where) -> anyhow::Result<ClipStore> {
    let client = place.nats.connect().await?;
    Ok(ClipStore::existing(&client, &place.namespace).await?)
}

pub async fn run(command: ClipsCommand) -> anyhow::Result<()> {
    match command {
        ClipsCommand::List { place, filter } => {
            let store = open(&place).await?;
            for o in store.list().await? {
                if o.role == Role::Video && filter.keeps(&o) {
                    println!("{}", serde_json::to_string(&o.clip)?);
                }
            }
            Ok(())
        }
        ClipsCommand::Get {
            name,
            output,
            place,
        } => {
            let store = open(&place).await?;
            let path = match output {
                Some(p) => p,
                None => PathBuf::from(
                    name.rsplit('/')
                        .next()
                        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
                        .with_context(|| format!("{name:?} has no file name; give -o FILE"))?,
                ),
            };
            let partial = path.with_extension("partial");
            let mut file = tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("cannot create {}", partial.display()))?;
            let written = match store.get_to(&name, &mut file).await {
                Ok(n) => n,
                Err(e) => {
                    drop(file);
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(e.into());
                }
            };
            tokio::fs::rename(&partial, &path)
                .await
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("panoptes: {name} → {} ({written} bytes)", path.display());
            Ok(())
        }
        ClipsCommand::Rm { name, place } => {
            let store = open(&place).await?;
            let objects = store.list().await?;
            // By an object's name: its whole clip; otherwise `name` is a clip ID.
            let id = objects
                .iter()
                .find(|o| o.name == name)
                .map_or_else(|| name.clone(), |o| o.clip.id.clone());
            let doomed: Vec<&StoredObject> = objects.iter().filter(|o| o.clip.id == id).collect();
            anyhow::ensure!(!doomed.is_empty(), "no stored clip named {name:?}");
            for o in doomed {
                store.remove(&o.name).await?;
                eprintln!("panoptes: removed {}", o.name);
            }
            Ok(())
        }
    }
}
