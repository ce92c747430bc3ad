//! Operator and application commands.

use std::time::Duration;

use shardkeeper_cluster::{ClusterError, JobState, MembersError, StateKind};
use shardkeeper_protocol::Snowflake;
use shardkeeper_protocol::payload::{
    Activity, ActivityType, PresenceUpdate, RequestGuildMembers, Status, VoiceStateUpdate,
};
use shardkeeper_sim::guild_ids;

use crate::harness::{CLOSE_READ, Env, sim_config};

fn presence() -> PresenceUpdate {
    PresenceUpdate {
        since: None,
        activities: vec![Activity {
            name: "e2e".into(),
            kind: ActivityType::WATCHING,
            url: None,
            state: None,
        }],
        status: Status::Online,
        afk: false,
    }
}

#[actix::test]
async fn restart_stop_start() {
    let env = Env::start(sim_config(2, 2)).await;
    env.all_ready(Duration::from_secs(5)).await;

    env.cluster.restart(0, false).await.expect("restart");
    env.wait_for("resume", Duration::from_secs(5), |env| {
        env.cluster
            .shard(0)
            .is_some_and(|s| s.resumes == 1 && s.state == StateKind::Ready)
    })
    .await;
    assert_eq!(env.sim.stats().identifies, 2);

    env.cluster.restart(0, true).await.expect("fresh restart");
    env.wait_for("identify", Duration::from_secs(5), |env| {
        env.cluster
            .shard(0)
            .is_some_and(|s| s.identifies == 2 && s.state == StateKind::Ready)
    })
    .await;
    assert_eq!(env.sim.stats().identifies, 3);
    env.wait_for("close 1000", CLOSE_READ, |env| {
        env.sim.stats().client_close_codes.get(&1000) == Some(&1)
    })
    .await;

    env.cluster.stop(1).await.expect("stop");
    env.shard_state(1, StateKind::Stopped, Duration::from_secs(2))
        .await;
    env.wait_for("close 4000", CLOSE_READ, |env| {
        env.sim.stats().client_close_codes.get(&4000) >= Some(&2)
    })
    .await;
    env.cluster.start(1).await.expect("start");
    env.wait_for("resume after start", Duration::from_secs(5), |env| {
        env.cluster
            .shard(1)
            .is_some_and(|s| s.resumes == 1 && s.state == StateKind::Ready)
    })
    .await;
    assert_eq!(env.sim.stats().identifies, 3);

    assert!(matches!(
        env.cluster.restart(7, false).await,
        Err(ClusterError::NotOwned(7))
    ));
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn presence_voice_and_members() {
    let env = Env::start(sim_config(4, 4)).await;
    env.all_ready(Duration::from_secs(5)).await;
    assert_eq!(
        env.cluster
            .presence(None, presence())
            .await
            .expect("presence"),
        4
    );
    env.wait_for("presence at every shard", Duration::from_secs(2), |env| {
        let stats = env.sim.stats();
        (0..4).all(|s| {
            stats
                .shards
                .get(&s)
                .is_some_and(|st| st.presence_updates == 1)
        })
    })
    .await;

    let guild = guild_ids(2, 4, 2)[1];
    let voice = VoiceStateUpdate {
        guild_id: Snowflake(guild),
        channel_id: Some(Snowflake(5)),
        self_mute: true,
        self_deaf: false,
    };
    assert_eq!(env.cluster.voice_state(voice).await.expect("voice"), 2);

    let request = RequestGuildMembers {
        guild_id: Snowflake(guild),
        query: Some(String::new()),
        limit: Some(0),
        presences: false,
        user_ids: None,
        nonce: None,
    };
    let chunks = env
        .cluster
        .request_members(request.clone())
        .await
        .expect("members");
    assert_eq!(chunks.len(), 2);
    let members: usize = chunks
        .iter()
        .map(|c| {
            serde_json::from_str::<serde_json::Value>(c.get()).expect("json")["members"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(members, 1500);
    let limited = env.cluster.request_members(request).await;
    assert!(
        matches!(limited, Err(ClusterError::Members(MembersError::RateLimited { retry_after })) if retry_after > 25.0),
        "{limited:?}"
    );
    env.assert_clean().await;
    env.stop().await;
}

#[actix::test]
async fn rolling_restart_resumes_every_shard() {
    let env = Env::start(sim_config(4, 4)).await;
    env.all_ready(Duration::from_secs(5)).await;
    let job = env
        .cluster
        .start_rolling_restart(false, false)
        .expect("rolling restart");
    env.wait_for("the job to end", Duration::from_secs(10), |env| {
        env.cluster
            .job(&job.id)
            .is_some_and(|job| job.state != JobState::Running)
    })
    .await;
    let ended = env.cluster.job(&job.id).expect("the job is kept");
    assert_eq!(ended.state, JobState::Completed, "{ended:?}");
    assert_eq!((ended.done, ended.total), (4, 4));
    env.all_ready(Duration::from_secs(5)).await;
    assert!(env.cluster.shards().iter().all(|s| s.resumes == 1));
    assert_eq!(env.sim.stats().identifies, 4);
    env.assert_clean().await;
    env.stop().await;
}
