//! The vault actor: storage, isolation, signing and rotation.

use std::time::Duration;

use super::*;
use crate::mailbox::ask;
use crate::store::StoreConfig;

const DEADLINE: Duration = Duration::from_secs(5);
/// Binance's documented signing example (`../shared/fixtures/binance/signing.txt`).
const BINANCE_API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const BINANCE_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
const BINANCE_PAYLOAD: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
const BINANCE_SIGNATURE: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    (dir, store)
}

fn add(user_id: u64, label: &str) -> AddCredential {
    AddCredential {
        user_id,
        venue: "binance".into(),
        label: label.into(),
        api_key: SecretString::from(BINANCE_API_KEY.to_owned()),
        api_secret: SecretString::from(BINANCE_SECRET.to_owned()),
        testnet: false,
    }
}

fn copy(key: &MasterKey) -> MasterKey {
    MasterKey::from_base64(&key.to_base64()).unwrap()
}

#[test]
fn binances_documented_signing_example_matches() {
    let signature = hmac_sha256_hex(BINANCE_SECRET.as_bytes(), BINANCE_PAYLOAD.as_bytes()).unwrap();
    assert_eq!(signature, BINANCE_SIGNATURE);
}

#[test]
fn key_hints_show_only_the_ends() {
    assert_eq!(key_hint(BINANCE_API_KEY), "vmPU…Eh8A");
    assert_eq!(key_hint("short"), "…rt");
    assert_eq!(key_hint(""), "…");
}

#[actix_rt::test]
async fn the_vault_signs_with_a_stored_credential_and_never_returns_the_secret() {
    let (_dir, store) = open_store();
    let vault =
        Vault::new(store, KeyRing::new(MasterKey::generate().unwrap()).into(), 20).unwrap().start();
    let view = ask(&vault, add(1, "main"), DEADLINE, "vault").await.unwrap().unwrap();
    assert_eq!(view.api_key_hint, "vmPU…Eh8A");
    let rendered = format!("{view:?} {}", serde_json::to_string(&view).unwrap());
    assert!(!rendered.contains(BINANCE_SECRET) && !rendered.contains(BINANCE_API_KEY));

    let sign = Sign { user_id: 1, credential_id: view.id, payload: BINANCE_PAYLOAD.into() };
    let signed = ask(&vault, sign, DEADLINE, "vault").await.unwrap().unwrap();
    assert_eq!(signed.signature, BINANCE_SIGNATURE);
    assert_eq!(signed.api_key, BINANCE_API_KEY);
}

#[actix_rt::test]
async fn another_users_credential_is_not_found_for_any_operation() {
    let (_dir, store) = open_store();
    let vault =
        Vault::new(store, KeyRing::new(MasterKey::generate().unwrap()).into(), 20).unwrap().start();
    let mine = ask(&vault, add(1, "mine"), DEADLINE, "vault").await.unwrap().unwrap();

    let listed =
        ask(&vault, ListCredentials { user_id: 2 }, DEADLINE, "vault").await.unwrap().unwrap();
    assert!(listed.is_empty());
    let sign = Sign { user_id: 2, credential_id: mine.id, payload: "x".into() };
    assert!(matches!(
        ask(&vault, sign, DEADLINE, "vault").await.unwrap(),
        Err(VaultError::NotFound)
    ));
    let remove = RemoveCredential { user_id: 2, credential_id: mine.id };
    assert!(matches!(
        ask(&vault, remove, DEADLINE, "vault").await.unwrap(),
        Err(VaultError::NotFound)
    ));

    let listed =
        ask(&vault, ListCredentials { user_id: 1 }, DEADLINE, "vault").await.unwrap().unwrap();
    assert_eq!(listed, vec![mine.clone()]);
    let remove = RemoveCredential { user_id: 1, credential_id: mine.id };
    ask(&vault, remove, DEADLINE, "vault").await.unwrap().unwrap();
    let listed =
        ask(&vault, ListCredentials { user_id: 1 }, DEADLINE, "vault").await.unwrap().unwrap();
    assert!(listed.is_empty());
}

#[actix_rt::test]
async fn a_user_cannot_store_more_than_the_limit() {
    let (_dir, store) = open_store();
    let vault =
        Vault::new(store, KeyRing::new(MasterKey::generate().unwrap()).into(), 2).unwrap().start();
    for label in ["a", "b"] {
        ask(&vault, add(1, label), DEADLINE, "vault").await.unwrap().unwrap();
    }
    let third = ask(&vault, add(1, "c"), DEADLINE, "vault").await.unwrap();
    assert!(matches!(third, Err(VaultError::Limit(2))));
    ask(&vault, add(2, "other user"), DEADLINE, "vault").await.unwrap().unwrap();
}

#[actix_rt::test]
async fn a_ciphertext_copied_onto_another_users_record_fails_to_open() {
    let (_dir, store) = open_store();
    let ring = std::sync::Arc::new(KeyRing::new(MasterKey::generate().unwrap()));
    let vault = Vault::new(store.clone(), ring.clone(), 20).unwrap().start();
    let victim = ask(&vault, add(1, "victim"), DEADLINE, "vault").await.unwrap().unwrap();
    let attacker = ask(&vault, add(2, "attacker"), DEADLINE, "vault").await.unwrap().unwrap();
    // Copy the victim's envelopes onto the attacker's record, as someone with write access to
    // the data directory might.
    let credentials = Credentials::new(store).unwrap();
    let stolen = credentials.get(1, victim.id).unwrap().unwrap();
    let mut forged = credentials.get(2, attacker.id).unwrap().unwrap();
    forged.api_key = stolen.api_key.clone();
    forged.api_secret = stolen.api_secret.clone();
    credentials.put(&forged).unwrap();
    let sign = Sign { user_id: 2, credential_id: attacker.id, payload: "x".into() };
    assert!(matches!(
        ask(&vault, sign, DEADLINE, "vault").await.unwrap(),
        Err(VaultError::Tampered)
    ));
}

#[actix_rt::test]
async fn a_rotation_interrupted_midway_leaves_every_credential_readable_and_can_finish() {
    let (_dir, store) = open_store();
    let old = MasterKey::generate().unwrap();
    let vault = Vault::new(store.clone(), KeyRing::new(copy(&old)).into(), 20).unwrap().start();
    let mut ids = Vec::new();
    for user in 1..=5 {
        ids.push((user, ask(&vault, add(user, "k"), DEADLINE, "vault").await.unwrap().unwrap().id));
    }
    let new = MasterKey::generate().unwrap();
    let transition = KeyRing::new(copy(&new)).with_previous(copy(&old));

    // "Crash" after two credentials.
    let mut done = 0;
    let report = rotate(&store, &transition, |_| {
        done += 1;
        done < 2
    })
    .await
    .unwrap();
    assert_eq!(report.rewrapped, 2);

    let credentials = Credentials::new(store.clone()).unwrap();
    let sign_all = |ring: &KeyRing| {
        ids.iter()
            .map(|(user, id)| {
                credentials.sign(
                    ring,
                    &Sign { user_id: *user, credential_id: *id, payload: BINANCE_PAYLOAD.into() },
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(
        sign_all(&transition)
            .iter()
            .all(|s| s.as_ref().is_ok_and(|s| s.signature == BINANCE_SIGNATURE))
    );
    let new_only = KeyRing::new(copy(&new));
    assert_eq!(sign_all(&new_only).iter().filter(|s| s.is_ok()).count(), 2);

    let report = rotate(&store, &transition, |_| true).await.unwrap();
    assert_eq!(report, RotationReport { rewrapped: 3, already_current: 2 });
    assert!(sign_all(&new_only).iter().all(Result::is_ok));
    let old_only = KeyRing::new(copy(&old));
    assert!(sign_all(&old_only).iter().all(|s| matches!(s, Err(VaultError::UnknownKey(_)))));
}

#[actix_rt::test]
async fn notification_secrets_are_sealed_per_channel_signed_inside_and_rotated_with_the_rest() {
    use keel_core::notify::{EventKind, signing};

    use super::notify::{OpenBotToken, SealChannelSecret, SignWebhook, WEBHOOK_SECRET_FIELD};
    use crate::notify::{ChannelRecord, Channels, Target};

    let (_dir, store) = open_store();
    let old = MasterKey::generate().unwrap();
    let vault = Vault::new(store.clone(), KeyRing::new(copy(&old)).into(), 20).unwrap().start();
    let seal = |channel_id, field| SealChannelSecret {
        user_id: 1,
        channel_id,
        field,
        secret: SecretString::from("whsec_abc".to_owned()),
    };
    let sealed = ask(&vault, seal(7, WEBHOOK_SECRET_FIELD), DEADLINE, "vault").await.unwrap();
    let sealed = sealed.unwrap();
    assert!(!format!("{sealed:?}").contains("whsec_abc"));
    let body = br#"{"type":"fill"}"#.to_vec();
    let sign = |secret: Envelope, channel_id| SignWebhook {
        user_id: 1,
        channel_id,
        secret,
        timestamp: 100,
        body: body.clone(),
    };
    let header = ask(&vault, sign(sealed.clone(), 7), DEADLINE, "vault").await.unwrap().unwrap();
    assert_eq!(signing::verify(b"whsec_abc", &header, &body, 100, 0), Ok(()));
    // Bound to its channel and field: copied elsewhere, it does not open.
    let moved = ask(&vault, sign(sealed.clone(), 8), DEADLINE, "vault").await.unwrap();
    assert!(matches!(moved, Err(VaultError::Tampered)));
    let as_token = OpenBotToken { user_id: 1, channel_id: 7, secret: sealed.clone() };
    assert!(matches!(
        ask(&vault, as_token, DEADLINE, "vault").await.unwrap(),
        Err(VaultError::Tampered)
    ));

    let channels = Channels::open(&store).unwrap();
    let record = ChannelRecord {
        id: 7,
        user_id: 1,
        target: Target::Webhook { url: "https://example.com/".into() },
        events: vec![EventKind::Fill],
        secret: sealed,
        created_at_ms: 0,
    };
    channels.insert(&record).unwrap();
    let new = MasterKey::generate().unwrap();
    let transition = KeyRing::new(copy(&new)).with_previous(copy(&old));
    let report = rotate(&store, &transition, |_| true).await.unwrap();
    assert_eq!(report, RotationReport { rewrapped: 1, already_current: 0 });
    let rotated = channels.get(1, 7).unwrap().unwrap().secret;
    let new_only = KeyRing::new(copy(&new));
    let binding = Binding { user_id: 1, credential_id: 7, field: WEBHOOK_SECRET_FIELD };
    assert_eq!(&rotated.open(&new_only, &binding).unwrap()[..], b"whsec_abc");
}
