//! The `geo` rule: a circle on the Earth and/or a list of countries, matched against the
//! retrieval's `context` as the service reports it.
//!
//! Distance is the great-circle (haversine) distance on a sphere of the IUGG mean Earth radius,
//! 6371.0088 km; the error against the ellipsoid is under 0.5 %, far below the precision of
//! where a service thinks a person is. Countries are ISO 3166-1 alpha-2 codes, checked against
//! the list of assigned codes. This module trusts nothing about the context beyond its shape:
//! it does not geolocate addresses itself.

use serde::{Deserialize, Serialize};

use super::{Denial, PolicyError};
use crate::wire::{GeoInput, RetrievalContext};

/// Mean Earth radius (IUGG), in km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The officially assigned ISO 3166-1 alpha-2 codes (249), as in tzdata's `iso3166.tab`.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG \
BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX \
CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN \
GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI \
KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ \
MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR \
PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC \
TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT \
ZA ZM ZW";

/// Whether `code` (upper case) is an assigned ISO 3166-1 alpha-2 code.
fn is_assigned_country(code: &str) -> bool {
    code.len() == 2 && ISO_3166_ALPHA2.split_ascii_whitespace().any(|c| c == code)
}

/// A circle on the Earth: a centre and a radius.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoCircle {
    /// Degrees north, -90 to 90.
    latitude: f64,
    /// Degrees east, -180 to 180.
    longitude: f64,
    /// Radius in km, finite and above 0.
    radius_km: f64,
}

impl GeoCircle {
    /// Degrees north of the centre.
    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    /// Degrees east of the centre.
    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// Radius in km.
    pub fn radius_km(&self) -> f64 {
        self.radius_km
    }

    /// Whether the point lies within the circle (boundary included).
    pub fn contains(&self, latitude: f64, longitude: f64) -> bool {
        distance_km(self.latitude, self.longitude, latitude, longitude) <= self.radius_km
    }
}

/// A validated `geo` rule: a circle, a list of countries, or both (then both must hold).
/// Stored as JSON in the shape of its input ([`GeoInput`]) and validated again when read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GeoInput", into = "GeoInput")]
pub struct Geo {
    /// Where the person must be, if given.
    circle: Option<GeoCircle>,
    /// The countries (upper case, no duplicates) the person must be in, if given.
    countries: Option<Vec<String>>,
}

impl Geo {
    /// Validates a `geo` rule; error fields are relative (`latitude`, `countries[1]`, …).
    pub fn parse(input: &GeoInput) -> Result<Geo, PolicyError> {
        let circle = match (input.latitude, input.longitude, input.radius_km) {
            (None, None, None) => None,
            (Some(latitude), Some(longitude), Some(radius_km)) => {
                if !(-90.0..=90.0).contains(&latitude) {
                    return Err(PolicyError::new("latitude", "must be between -90 and 90"));
                }
                if !(-180.0..=180.0).contains(&longitude) {
                    return Err(PolicyError::new(
                        "longitude",
                        "must be between -180 and 180",
                    ));
                }
                if !(radius_km.is_finite() && radius_km > 0.0) {
                    return Err(PolicyError::new(
                        "radius_km",
                        "must be a number of km above 0",
                    ));
                }
                Some(GeoCircle {
                    latitude,
                    longitude,
                    radius_km,
                })
            }
            (latitude, longitude, _) => {
                let missing = if latitude.is_none() {
                    "latitude"
                } else if longitude.is_none() {
                    "longitude"
                } else {
                    "radius_km"
                };
                return Err(PolicyError::new(
                    missing,
                    "latitude, longitude and radius_km go together: give all three or none",
                ));
            }
        };
        let countries = match &input.countries {
            None => None,
            Some(list) => Some(parse_countries(list)?),
        };
        if circle.is_none() && countries.is_none() {
            return Err(PolicyError::new(
                "countries",
                "geo needs latitude, longitude and radius_km, or countries, or both",
            ));
        }
        Ok(Geo { circle, countries })
    }

    /// The circle, if the rule has one.
    pub fn circle(&self) -> Option<&GeoCircle> {
        self.circle.as_ref()
    }

    /// The countries (upper-case ISO 3166-1 alpha-2), if the rule lists them.
    pub fn countries(&self) -> Option<&[String]> {
        self.countries.as_deref()
    }

    /// Checks a retrieval's context. Context that the rule needs and that is missing (or
    /// coordinates out of range) is [`Denial::GeoContextRequired`], checked for both parts
    /// before either is evaluated; a place outside the rule is [`Denial::GeoDenied`].
    pub fn check(&self, context: Option<&RetrievalContext>) -> Result<(), Denial> {
        let point = match self.circle {
            None => None,
            Some(_) => {
                let lat = context.and_then(|c| c.latitude);
                let lon = context.and_then(|c| c.longitude);
                match (lat, lon) {
                    (Some(lat), Some(lon))
                        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                    {
                        Some((lat, lon))
                    }
                    _ => return Err(Denial::GeoContextRequired),
                }
            }
        };
        let country = match self.countries {
            None => None,
            Some(_) => match context.and_then(|c| c.country.as_deref()) {
                Some(country) if !country.is_empty() => Some(country),
                _ => return Err(Denial::GeoContextRequired),
            },
        };
        if let (Some(circle), Some((lat, lon))) = (&self.circle, point) {
            if !circle.contains(lat, lon) {
                return Err(Denial::GeoDenied);
            }
        }
        if let (Some(list), Some(country)) = (&self.countries, country) {
            if !list.iter().any(|c| c.eq_ignore_ascii_case(country.trim())) {
                return Err(Denial::GeoDenied);
            }
        }
        Ok(())
    }
}

impl TryFrom<GeoInput> for Geo {
    type Error = PolicyError;

    /// Validates a stored rule again when it is read back.
    fn try_from(input: GeoInput) -> Result<Self, Self::Error> {
        Geo::parse(&input).map_err(|e| e.prefixed("geo"))
    }
}

impl From<Geo> for GeoInput {
    /// The stored shape: the input shape, countries upper-cased.
    fn from(geo: Geo) -> Self {
        GeoInput {
            latitude: geo.circle.map(|c| c.latitude),
            longitude: geo.circle.map(|c| c.longitude),
            radius_km: geo.circle.map(|c| c.radius_km),
            countries: geo.countries,
        }
    }
}

/// Validates and upper-cases country codes; a code listed twice is kept once.
fn parse_countries(list: &[String]) -> Result<Vec<String>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::new(
            "countries",
            "must list at least one country (omit it for anywhere)",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, code) in list.iter().enumerate() {
        let upper = code.to_ascii_uppercase();
        if !is_assigned_country(&upper) {
            return Err(PolicyError::new(
                format!("countries[{i}]"),
                format!("`{code}` is not an ISO 3166-1 alpha-2 country code, e.g. DE or US"),
            ));
        }
        if !out.contains(&upper) {
            out.push(upper);
        }
    }
    Ok(out)
}

/// Great-circle distance in km between two points given in degrees (haversine formula).
pub(crate) fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = (lat2 - lat1).to_radians();
    let d_lambda = (lon2 - lon1).to_radians();
    let h = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    // Rounding can push h a hair outside [0, 1] for antipodal points; asin would be NaN.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circle(lat: f64, lon: f64, r: f64) -> GeoInput {
        GeoInput {
            latitude: Some(lat),
            longitude: Some(lon),
            radius_km: Some(r),
            countries: None,
        }
    }

    fn ctx(lat: Option<f64>, lon: Option<f64>, country: Option<&str>) -> RetrievalContext {
        RetrievalContext {
            ip: None,
            latitude: lat,
            longitude: lon,
            country: country.map(str::to_owned),
        }
    }

    #[test]
    fn country_list_has_every_assigned_code() {
        let codes: Vec<&str> = ISO_3166_ALPHA2.split_ascii_whitespace().collect();
        assert_eq!(codes.len(), 249);
        assert!(
            codes.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(codes.iter().all(|c| c.len() == 2));
        for c in ["DE", "US", "GB", "AQ", "ZW"] {
            assert!(is_assigned_country(c), "{c}");
        }
        for c in ["UK", "XX", "EU", "XK", "D", "DEU", ""] {
            assert!(!is_assigned_country(c), "{c}");
        }
    }

    #[test]
    fn known_distances() {
        // Berlin (52.52, 13.405) to Paris (48.8566, 2.3522): about 878 km.
        let d = distance_km(52.52, 13.405, 48.8566, 2.3522);
        assert!((d - 878.0).abs() < 3.0, "{d}");
        // A quarter of a meridian.
        let d = distance_km(0.0, 0.0, 90.0, 0.0);
        assert!(
            (d - EARTH_RADIUS_KM * std::f64::consts::FRAC_PI_2).abs() < 1e-6,
            "{d}"
        );
        // Antipodes: half the circumference, no NaN (asin near 1 costs precision: within 1 m).
        let d = distance_km(10.0, 20.0, -10.0, -160.0);
        assert!(
            (d - EARTH_RADIUS_KM * std::f64::consts::PI).abs() < 1e-3,
            "{d}"
        );
        assert_eq!(distance_km(42.28, -83.74, 42.28, -83.74), 0.0);
        // Across the antimeridian: 179.5 E to 179.5 W on the equator is 1 degree.
        let d = distance_km(0.0, 179.5, 0.0, -179.5);
        assert!((d - 111.195).abs() < 0.01, "{d}");
    }

    #[test]
    fn radius_boundary() {
        // One degree of longitude on the equator = 2πR/360 ≈ 111.195 km.
        let one_degree = 2.0 * std::f64::consts::PI * EARTH_RADIUS_KM / 360.0;
        let inside = Geo::parse(&circle(0.0, 0.0, one_degree + 0.001)).unwrap();
        let outside = Geo::parse(&circle(0.0, 0.0, one_degree - 0.001)).unwrap();
        let c = ctx(Some(0.0), Some(1.0), None);
        assert_eq!(inside.check(Some(&c)), Ok(()));
        assert_eq!(outside.check(Some(&c)), Err(Denial::GeoDenied));
    }

    #[test]
    fn countries_and_context() {
        let geo = Geo::parse(&GeoInput {
            countries: Some(vec!["de".into(), "AT".into(), "De".into()]),
            ..GeoInput::default()
        })
        .unwrap();
        assert_eq!(geo.countries().unwrap(), ["DE", "AT"]);
        assert_eq!(geo.check(Some(&ctx(None, None, Some("DE")))), Ok(()));
        assert_eq!(geo.check(Some(&ctx(None, None, Some("at")))), Ok(()));
        assert_eq!(
            geo.check(Some(&ctx(None, None, Some("US")))),
            Err(Denial::GeoDenied)
        );
        assert_eq!(
            geo.check(Some(&ctx(Some(1.0), Some(1.0), None))),
            Err(Denial::GeoContextRequired)
        );
        assert_eq!(
            geo.check(Some(&ctx(None, None, Some("")))),
            Err(Denial::GeoContextRequired)
        );
        assert_eq!(geo.check(None), Err(Denial::GeoContextRequired));
    }

    #[test]
    fn both_parts_must_hold_and_context_is_checked_first() {
        // Berlin, 50 km, and DE.
        let geo = Geo::parse(&GeoInput {
            countries: Some(vec!["DE".into()]),
            ..circle(52.52, 13.405, 50.0)
        })
        .unwrap();
        let berlin = (Some(52.5), Some(13.4));
        let paris = (Some(48.8566), Some(2.3522));
        for (c, want) in [
            (ctx(berlin.0, berlin.1, Some("DE")), Ok(())),
            (ctx(berlin.0, berlin.1, Some("FR")), Err(Denial::GeoDenied)),
            (ctx(paris.0, paris.1, Some("DE")), Err(Denial::GeoDenied)),
            (ctx(paris.0, paris.1, None), Err(Denial::GeoContextRequired)),
            (ctx(None, None, Some("DE")), Err(Denial::GeoContextRequired)),
            (
                ctx(berlin.0, None, Some("DE")),
                Err(Denial::GeoContextRequired),
            ),
            (
                ctx(Some(100.0), berlin.1, Some("DE")),
                Err(Denial::GeoContextRequired),
            ),
        ] {
            assert_eq!(geo.check(Some(&c)), want, "{c:?}");
        }
    }

    #[test]
    fn rejects_bad_input_naming_the_field() {
        let cases: Vec<(GeoInput, &str)> = vec![
            (GeoInput::default(), "countries"),
            (circle(91.0, 0.0, 1.0), "latitude"),
            (circle(-90.5, 0.0, 1.0), "latitude"),
            (circle(f64::NAN, 0.0, 1.0), "latitude"),
            (circle(0.0, 180.5, 1.0), "longitude"),
            (circle(0.0, 0.0, 0.0), "radius_km"),
            (circle(0.0, 0.0, -5.0), "radius_km"),
            (circle(0.0, 0.0, f64::INFINITY), "radius_km"),
            (circle(0.0, 0.0, f64::NAN), "radius_km"),
            (
                GeoInput {
                    radius_km: None,
                    ..circle(1.0, 1.0, 1.0)
                },
                "radius_km",
            ),
            (
                GeoInput {
                    latitude: None,
                    ..circle(1.0, 1.0, 1.0)
                },
                "latitude",
            ),
            (
                GeoInput {
                    radius_km: Some(5.0),
                    ..GeoInput::default()
                },
                "latitude",
            ),
            (
                GeoInput {
                    countries: Some(vec![]),
                    ..GeoInput::default()
                },
                "countries",
            ),
            (
                GeoInput {
                    countries: Some(vec!["DE".into(), "UK".into()]),
                    ..GeoInput::default()
                },
                "countries[1]",
            ),
            (
                GeoInput {
                    countries: Some(vec!["DEU".into()]),
                    ..GeoInput::default()
                },
                "countries[0]",
            ),
        ];
        for (input, field) in cases {
            let err = Geo::parse(&input).unwrap_err();
            assert_eq!(err.field, field, "{input:?}: {err}");
        }
    }

    #[test]
    fn poles_and_edges_are_valid() {
        for g in [circle(90.0, 180.0, 0.001), circle(-90.0, -180.0, 20_000.0)] {
            assert!(Geo::parse(&g).is_ok(), "{g:?}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let geo = Geo::parse(&GeoInput {
            countries: Some(vec!["de".into()]),
            ..circle(52.52, 13.405, 50.0)
        })
        .unwrap();
        let json = serde_json::to_string(&geo).unwrap();
        let back: Geo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, geo);
        let err = serde_json::from_str::<Geo>(r#"{"radius_km":5}"#).unwrap_err();
        assert!(err.to_string().contains("geo.latitude"), "{err}");
    }
}
