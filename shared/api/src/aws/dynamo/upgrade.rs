//! A table the first release wrote, moved to this release's layout once after the stack is
//! upgraded: webhook secrets and tokens lived in the organization's partition (`ORG#{org}`,
//! `SECRET#{provider}` / `TOKEN#{id}`), where this release reads neither (they have partitions
//! of their own, `SECRET#{org}` and `TOKEN#{org}`, which the internet-facing functions' roles
//! keep them out of); and the service counts that bound an organization did not exist.
//! Without it, an upgraded stack refuses every delivery (no secret found), lists no token and
//! cannot revoke one (its hash lookup still lets it in), and counts services from zero.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    COUNT, DynamoStore, Expr, GSI1PK, GSI2PK, Item, PK, SK, key, key_counter, n, optional_string_attr, s, secret_pk,
    services_counter, string_attr, token_pk, unavailable,
};
use crate::store::StoreResult;

/// What an upgrade moved and counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutUpgrade {
    /// Webhook secrets moved to their partition.
    pub secrets: usize,
    /// Tokens moved to their partition.
    pub tokens: usize,
    /// Secrets and tokens left where they were because one was set at the new place since.
    pub kept_newer: usize,
    /// Service counts written: one per organization, one per repository or image.
    pub counts: usize,
}

/// The first release's items of an organization's partition that this release keeps elsewhere.
enum Moved {
    Secret,
    Token,
}

impl DynamoStore {
    /// Move a first-release table to this release's layout; safe to run again (what moved is
    /// no longer found, and the counts are set, not added to). Run it right after the upgrade,
    /// before services are changed: the counts are those of the services it reads.
    pub async fn upgrade_first_release_layout(&self) -> StoreResult<LayoutUpgrade> {
        let mut report = LayoutUpgrade::default();
        // Services per organization, and per repository or image index value: by counter.
        let mut counts: BTreeMap<String, (Item, i64)> = BTreeMap::new();
        let mut count = |counter: Item| -> StoreResult<()> {
            let pk = string_attr(&counter, PK)?;
            counts.entry(pk).or_insert((counter, 0)).1 += 1;
            Ok(())
        };
        let mut start: Option<Item> = None;
        loop {
            let mut e = Expr::default();
            let filter = format!(
                "begins_with({pk}, {org}) AND (begins_with({sk}, {secret}) OR begins_with({sk}, {token}) \
                 OR begins_with({sk}, {service}))",
                pk = e.name(PK),
                sk = e.name(SK),
                org = e.value("org", s("ORG#")),
                secret = e.value("secret", s("SECRET#")),
                token = e.value("token", s("TOKEN#")),
                service = e.value("service", s("SERVICE#")),
            );
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter)
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| unavailable("upgrade_first_release_layout", &err))?;
            for item in page.items() {
                let pk = string_attr(item, PK)?;
                let sk = string_attr(item, SK)?;
                let Some(org) = pk.strip_prefix("ORG#") else { continue };
                if sk.starts_with("SERVICE#") {
                    count(services_counter(org))?;
                    for attribute in [GSI1PK, GSI2PK] {
                        if let Some(value) = optional_string_attr(item, attribute)? {
                            count(key_counter(&value))?;
                        }
                    }
                } else if sk.starts_with("SECRET#") {
                    self.move_item(item, secret_pk(org), Moved::Secret, &mut report).await?;
                } else if sk.starts_with("TOKEN#") {
                    self.move_item(item, token_pk(org), Moved::Token, &mut report).await?;
                }
            }
            match page.last_evaluated_key() {
                Some(last) => start = Some(last.clone()),
                None => break,
            }
        }
        for (mut item, services) in counts.into_values() {
            item.insert(COUNT.to_owned(), n(services));
            self.put_item(item, None, "upgrade_first_release_layout").await?;
            report.counts += 1;
        }
        Ok(report)
    }

    /// Copy `item` to partition `pk` (same sort key and attributes) unless one is there
    /// already (set since the upgrade: it wins), then delete it where it was.
    async fn move_item(&self, item: &Item, pk: String, kind: Moved, report: &mut LayoutUpgrade) -> StoreResult<()> {
        let mut moved = item.clone();
        moved.insert(PK.to_owned(), AttributeValue::S(pk));
        let mut e = Expr::default();
        let absent = format!("attribute_not_exists({})", e.name(PK));
        if self
            .put_item(moved, Some((absent, e)), "upgrade_first_release_layout")
            .await?
        {
            match kind {
                Moved::Secret => report.secrets += 1,
                Moved::Token => report.tokens += 1,
            }
        } else {
            report.kept_newer += 1;
        }
        let old = key(string_attr(item, PK)?, string_attr(item, SK)?);
        self.delete_item(old, "upgrade_first_release_layout").await?;
        Ok(())
    }
}
